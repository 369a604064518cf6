// ort_bench.js — the ONNX Runtime side of tests/bench/bench_engine.py: loads a
// model exported by export_onnx.py into onnxruntime-node (CPU execution
// provider, intraOpNumThreads = --threads, one inter-op thread, sequential
// execution, all graph optimisations) and answers the same line protocol as
// bench_engine.c --serve. It owns no model math.
//
//   NODE_PATH=DIR/node_modules node tests/bench/ort_bench.js --model vision.onnx \
//       --threads T (--input RAW.f32 --batch B --size S [--channels C] | --ids RAW.i64 --ctx C)
//   stdin: "run K" -> {"times_ms": [...]}, "emb PATH" -> {"ok": 1}, "quit" -> {"rss_kb": N}
// Install: ONNXRUNTIME_NODE_INSTALL_CUDA=skip npm install --prefix DIR onnxruntime-node
'use strict';
const fs = require('fs');
const readline = require('readline');
const ort = require('onnxruntime-node');

// Peak resident set of this process image (VmHWM; maxRSS of resourceUsage
// also counts the parent's pages when it was exec'ed from a large process).
function peakRssKb() {
  try {
    const m = /VmHWM:\s+(\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    if (m) return parseInt(m[1], 10);
  } catch (e) { /* not Linux */ }
  return process.resourceUsage().maxRSS;
}

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}

async function main() {
  const model = arg('--model'), threads = parseInt(arg('--threads', '1'), 10);
  const t0 = process.hrtime.bigint();
  const session = await ort.InferenceSession.create(model, {
    executionProviders: ['cpu'],
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
  const openMs = Number(process.hrtime.bigint() - t0) / 1e6;
  let feeds;
  if (arg('--ids')) {
    const ctx = parseInt(arg('--ctx'), 10);
    const raw = fs.readFileSync(arg('--ids'));
    const ids = new BigInt64Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length));
    feeds = { ids: new ort.Tensor('int64', ids, [1, ctx]) };
  } else {
    const b = parseInt(arg('--batch'), 10), s = parseInt(arg('--size'), 10);
    const raw = fs.readFileSync(arg('--input'));
    const x = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length));
    const c = parseInt(arg('--channels', '3'), 10);
    feeds = { image: new ort.Tensor('float32', x, [b, c, s, s]) };
  }
  const rssOpen = peakRssKb();
  process.stdout.write(JSON.stringify({ ready: 1, open_ms: openMs, rss_open_kb: rssOpen }) + '\n');
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    let m;
    if ((m = /^run (\d+)$/.exec(line))) {
      const times = [];
      for (let i = 0; i < parseInt(m[1], 10); i++) {
        const a = process.hrtime.bigint();
        await session.run(feeds);
        times.push(Number(process.hrtime.bigint() - a) / 1e6);
      }
      process.stdout.write(JSON.stringify({ times_ms: times }) + '\n');
    } else if ((m = /^emb (.+)$/.exec(line))) {
      const out = await session.run(feeds);
      const e = out.embedding.data;
      fs.writeFileSync(m[1], Buffer.from(e.buffer, e.byteOffset, e.byteLength));
      process.stdout.write(JSON.stringify({ ok: 1 }) + '\n');
    } else if (line === 'quit') {
      break;
    } else {
      process.stdout.write(JSON.stringify({ error: 'unknown command' }) + '\n');
    }
  }
  process.stdout.write(JSON.stringify({ rss_kb: peakRssKb() }) + '\n');
  process.exit(0);
}

main().catch((e) => {
  process.stderr.write('ort_bench: ' + (e && e.stack ? e.stack : e) + '\n');
  process.exit(1);
});
