/*
 * explorer.js — the "Ask cxrvqa" panel on Orthanc Explorer's instance page
 * (jQuery Mobile UI of Orthanc 1.10). Embedded into the plugin at build time
 * and injected with OrthancPluginExtendOrthancExplorer. It only talks to the
 * plugin's REST routes; every value shown is escaped (text(), never html()
 * with server data).
 */
(function () {
  'use strict';

  var base = '../cxrvqa/instances/';

  function row(label, value) {
    return $('<tr>').append($('<th>').css('text-align', 'left').text(label), $('<td>').text(value));
  }

  function showAnswer(id, a) {
    var box = $('#cxrvqa-answer').empty();
    box.append($('<p>').append($('<strong>').attr('id', 'cxrvqa-verdict').text(a.answer || ''),
                               document.createTextNode(' — '),
                               $('<span>').attr('id', 'cxrvqa-text').text(a.text || '')));
    if (a.refused && a.reason) {
      box.append($('<p>').text('Refused: ' + a.reason));
    }
    /* display names in the answer's language; the tier says what the
       validation behind each finding supports */
    var zh = a.language === 'zh';
    var L = zh ? {finding: '发现', probability: '概率', threshold: '阈值', decision: '结论', tier: '证据',
                  auc: '验证 AUC（95% CI，阳性例数）', assessable: '可评估', limited: '证据有限',
                  'not-assessed': '无法评估',
                  decisions: {yes: '是', no: '否', uncertain: '不确定', 'not-assessed': '无法评估'}}
               : {finding: 'finding', probability: 'probability', threshold: 'threshold', decision: 'decision',
                  tier: 'tier', auc: 'validation AUC (95% CI, positives)', assessable: 'assessable',
                  limited: 'limited evidence', 'not-assessed': 'not assessed'};
    var t = $('<table>').attr('id', 'cxrvqa-findings').css('width', '100%');
    t.append($('<tr>').append($('<th>').text(L.finding), $('<th>').text(L.probability),
                              $('<th>').text(L.threshold), $('<th>').text(L.decision),
                              $('<th>').text(L.tier), $('<th>').text(L.auc)));
    var first = null;
    $.each(a.findings || [], function (i, f) {
      /* evidence is drawn only for a finding answered yes or uncertain */
      if (!first && f.finding && (f.decision === 'yes' || f.decision === 'uncertain')) first = f.finding;
      var v = f.validation_auc;
      var auc = v && typeof v.auc === 'number'
        ? v.auc.toFixed(2) + ' (' + (typeof v.ci95_low === 'number' ? v.ci95_low.toFixed(2) : '?') + '–' +
          (typeof v.ci95_high === 'number' ? v.ci95_high.toFixed(2) : '?') + ', n=' + v.positives + ')'
        : (zh ? '无验证' : 'not validated');
      t.append($('<tr>').addClass('cxrvqa-tier-' + (f.tier || '')).append(
        $('<td>').text(f.display || f.finding),
        $('<td>').text(typeof f.probability === 'number' ? f.probability.toFixed(3) : ''),
        $('<td>').text(typeof f.threshold === 'number' ? f.threshold.toFixed(3) : ''),
        $('<td>').text((zh && L.decisions[f.decision]) || f.decision || ''),
        $('<td>').addClass('cxrvqa-tier').text(L[f.tier] || f.tier || ''),
        $('<td>').addClass('cxrvqa-auc').text(auc)));
    });
    if ((a.findings || []).length) box.append(t);
    $.each(a.warnings || [], function (i, w) {
      box.append($('<p>').addClass('cxrvqa-warning').css('color', '#a60').text(w));
    });
    var model = a.model || {};
    box.append($('<table>').append(
      row('model', (model.name || '') + ' ' + (model.version || '')),
      row('latency', (a.latency_ms !== undefined ? a.latency_ms + ' ms' : '')),
      row('audit row', a.audit && a.audit.seq !== undefined ? '#' + a.audit.seq : '')));

    var sr = $('#cxrvqa-sr');
    if (a.sr_orthanc_id) {
      /* like Orthanc Explorer's own "Before anonymization" link */
      sr.attr('href', 'explorer.html#instance?uuid=' + encodeURIComponent(a.sr_orthanc_id)).show()
        .unbind('click').click(function (e) {
          e.preventDefault();
          window.location.assign($(this).attr('href'));
        });
    } else {
      sr.hide();
    }
    var img = $('#cxrvqa-heatmap');
    if (first) {
      img.attr('alt', 'evidence heatmap: ' + first)
         .attr('src', base + encodeURIComponent(id) + '/heatmap.png?finding=' + encodeURIComponent(first))
         .show();
    } else {
      img.removeAttr('src').hide();
    }
  }

  function ask(id) {
    var q = $.trim($('#cxrvqa-question').val());
    if (!q) return;
    $('#cxrvqa-status').text('Asking…');
    $('#cxrvqa-answer').empty();
    $('#cxrvqa-heatmap').hide();
    $('#cxrvqa-sr').hide();
    $.ajax({
      url: base + encodeURIComponent(id) + '/ask',
      type: 'POST',
      data: JSON.stringify({ question: q }),
      contentType: 'application/json',
      dataType: 'json',
      cache: false,
      success: function (a) {
        $('#cxrvqa-status').text('');
        showAnswer(id, a);
      },
      error: function (xhr) {
        var msg = xhr.status + ' ' + (xhr.statusText || '');
        try {
          var e = JSON.parse(xhr.responseText);
          if (e && e.error) msg += ': ' + e.error + (e.code ? ' (' + e.code + ')' : '');
        } catch (ignore) { /* not JSON */ }
        $('#cxrvqa-status').text('Error ' + msg);
      }
    });
  }

  var shown = null; /* the instance the panel was built for */

  function setup() {
    $('#cxrvqa-panel').remove();
    var id = $.mobile.pageData ? $.mobile.pageData.uuid : null;
    shown = id;
    if (!id) return;

    var panel = $('<div>').attr('id', 'cxrvqa-panel').addClass('ui-body ui-body-b')
      .css('margin-bottom', '10px')
      .append($('<h1>').text('Ask cxrvqa'))
      .append($('<p>').append($('<em>').text('Research use only — not a diagnostic device.')))
      .append($('<input>').attr({ type: 'text', id: 'cxrvqa-question' })
                          .val('Is there a pleural effusion?'))
      .append($('<a>').attr({ href: '#', id: 'cxrvqa-ask', 'data-role': 'button', 'data-inline': 'true' })
                      .text('Ask'))
      .append($('<p>').attr('id', 'cxrvqa-status'))
      .append($('<div>').attr('id', 'cxrvqa-answer'))
      .append($('<img>').attr('id', 'cxrvqa-heatmap').css({ 'max-width': '100%', display: 'none' }))
      .append($('<p>').append($('<a>').attr({ id: 'cxrvqa-sr', href: '#' }).css('display', 'none')
                                      .text('Open the structured report')));

    var tags = $('#instance .ui-block-b .ui-body').first();
    if (tags.length) {
      panel.insertBefore(tags);
    } else {
      $('#instance div[data-role="content"]').first().prepend(panel);
    }
    panel.trigger('create');

    $('#cxrvqa-ask').click(function (e) {
      e.preventDefault();
      ask(id);
    });
    $('#cxrvqa-question').keypress(function (e) {
      if (e.which === 13) {
        e.preventDefault();
        ask(id);
      }
    });
  }

  $('#instance').live('pagebeforeshow', setup);
  /* instance -> instance (the SR link, the back button) keeps the same jQuery
     Mobile page: Orthanc Explorer refreshes on hashchange, so do we */
  $(window).bind('hashchange', function () {
    setTimeout(function () {
      var d = $.mobile.pageData;
      if (d && d.active === 'instance' && d.uuid && d.uuid !== shown) setup();
    }, 0);
  });
}());
