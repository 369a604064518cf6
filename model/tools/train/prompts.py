#!/usr/bin/python3
"""prompts.py — the finding vocabulary of the cxrvqa default model, its
standard (deployed) prompt set, and the report-style caption generator the
training run turns labels into. It owns wording only: no model, no file
format, no data loading. train.py, export_gguf.py and cnn_forward.py import it.

Findings (F = 16): the label columns of ../shared/data/cxr/labels.csv under
stable names, display names and SNOMED CT codes (REFERENCE.md §4; COVID-19
840539006; "" where none was asked for).

Standard prompts (PROMPT_SET_VERSION): for each finding a list of "present"
and a list of "absent" sentences. The model file stores them and their
ensemble embeddings (mean of the normalised prompt embeddings, re-normalised);
zero-shot p = softmax(s<img,pos>, s<img,neg>)[0]. Training optimises exactly
this score (train.py, zero-shot loss), so changing a prompt means retraining.

Captions: one random report-style text per image and step, built from the
known labels only:
  - each present finding: one sentence from its synonyms and templates;
  - absent findings (label 0): a random subset, as negations, sometimes
    joined ("no focal consolidation, pleural effusion or pneumothorax.");
  - no_finding = 1: a normal statement ("the lungs are clear.") and often
    "heart size is normal." (only when cardiomegaly is labelled 0);
    no_finding = 0: sometimes a general abnormal statement;
  - unknown labels (empty) are never mentioned.
Side and size words ("small left pleural effusion") are drawn at random: the
labels carry neither, so the model learns to ignore them and cannot tell left
from right. Sentences are shuffled and the caption shortened until it fits the
text context.
"""
import random

PROMPT_SET_VERSION = "cxrvqa-prompts-1"

# name, label column, display, SNOMED CT
FINDINGS = [
    ("pleural_effusion", "effusion", "pleural effusion", "60046008"),
    ("pneumothorax", "pneumothorax", "pneumothorax", "36118008"),
    ("consolidation", "consolidation", "consolidation", "95436008"),
    ("atelectasis", "atelectasis", "atelectasis", "46621007"),
    ("pneumonia", "pneumonia", "pneumonia", "233604007"),
    ("cardiomegaly", "cardiomegaly", "cardiomegaly", "8186001"),
    ("pulmonary_edema", "edema", "pulmonary edema", "19242006"),
    ("nodule", "nodule", "pulmonary nodule", "427359005"),
    ("covid19", "covid19", "COVID-19", "840539006"),
    ("no_finding", "no_finding", "no acute abnormality", ""),
    ("infiltration", "infiltration", "infiltration", ""),
    ("mass", "mass", "lung mass", ""),
    ("emphysema", "emphysema", "emphysema", ""),
    ("fibrosis", "fibrosis", "pulmonary fibrosis", ""),
    ("pleural_thickening", "pleural_thickening", "pleural thickening", ""),
    ("hernia", "hernia", "hiatal hernia", ""),
]
NAMES = [f[0] for f in FINDINGS]
LABEL_COLUMNS = [f[1] for f in FINDINGS]


def _std(phrase, article=""):
    """The usual pair of prompt lists for a finding named by `phrase`."""
    a = article + " " if article else ""
    pos = [phrase, "there is %s%s" % (a, phrase), "findings consistent with %s" % phrase,
           "%s is present" % phrase]
    neg = ["no %s" % phrase, "there is no %s" % phrase, "no evidence of %s" % phrase,
           "%s is not seen" % phrase]
    return pos, neg


STANDARD_PROMPTS = {
    "pleural_effusion": _std("pleural effusion", "a"),
    "pneumothorax": _std("pneumothorax", "a"),
    "consolidation": _std("consolidation"),
    "atelectasis": _std("atelectasis"),
    "pneumonia": _std("pneumonia"),
    "cardiomegaly": (["cardiomegaly", "the heart is enlarged", "findings consistent with cardiomegaly",
                      "cardiomegaly is present"],
                     ["no cardiomegaly", "heart size is normal", "the heart is not enlarged",
                      "cardiomegaly is not seen"]),
    "pulmonary_edema": _std("pulmonary edema"),
    "nodule": _std("pulmonary nodule", "a"),
    "covid19": (["covid-19 pneumonia", "there is covid-19 pneumonia", "findings consistent with covid-19",
                 "covid-19 is present"],
                ["no covid-19 pneumonia", "there is no covid-19 pneumonia", "no evidence of covid-19",
                 "covid-19 is not seen"]),
    "no_finding": (["no acute cardiopulmonary abnormality", "the lungs are clear", "normal chest radiograph",
                    "no acute cardiopulmonary process"],
                   ["acute cardiopulmonary abnormality", "abnormal chest radiograph",
                    "there are abnormal findings", "acute cardiopulmonary process"]),
    "infiltration": _std("infiltration"),
    "mass": _std("lung mass", "a"),
    "emphysema": _std("emphysema"),
    "fibrosis": _std("pulmonary fibrosis"),
    "pleural_thickening": _std("pleural thickening"),
    "hernia": _std("hiatal hernia", "a"),
}
assert list(STANDARD_PROMPTS) == NAMES or set(STANDARD_PROMPTS) == set(NAMES)


def standard_prompt_lines():
    """cxr.findings.prompts: "name\\tpos\\tprompt" / "name\\tneg\\tprompt" in finding order."""
    out = []
    for n in NAMES:
        pos, neg = STANDARD_PROMPTS[n]
        out += ["%s\tpos\t%s" % (n, p) for p in pos] + ["%s\tneg\t%s" % (n, p) for p in neg]
    return out


# ------------------------------------------------------------ caption material

SIDES = ["", "", "left ", "right ", "bilateral "]
SIZES = ["", "", "small ", "moderate ", "large ", "trace "]

# present phrases: (phrase, takes the article "a") ; {side} / {size} filled at random
PRESENT = {
    "pleural_effusion": [("{size}{side}pleural effusion", True), ("pleural effusion", True),
                         ("{side}effusion", True), ("bilateral pleural effusions", False),
                         ("blunting of the {side}costophrenic angle", False), ("layering pleural fluid", False)],
    "pneumothorax": [("{size}{side}pneumothorax", True), ("pneumothorax", True), ("apical pneumothorax", True)],
    "consolidation": [("consolidation", False), ("focal consolidation", False), ("airspace consolidation", False),
                      ("{side}lower lobe consolidation", False), ("patchy consolidation", False),
                      ("dense consolidation", False)],
    "atelectasis": [("atelectasis", False), ("bibasilar atelectasis", False), ("subsegmental atelectasis", False),
                    ("{side}basilar atelectasis", False), ("plate-like atelectasis", False),
                    ("volume loss", False)],
    "pneumonia": [("pneumonia", False), ("{side}lower lobe pneumonia", False), ("multifocal pneumonia", False),
                  ("bronchopneumonia", False), ("an infectious process", False),
                  ("airspace opacity concerning for pneumonia", False), ("lobar pneumonia", False)],
    "cardiomegaly": [("cardiomegaly", False), ("an enlarged heart", False), ("mild cardiomegaly", False),
                     ("moderate cardiomegaly", False), ("an enlarged cardiac silhouette", False)],
    "pulmonary_edema": [("pulmonary edema", False), ("mild pulmonary edema", False), ("interstitial edema", False),
                        ("pulmonary vascular congestion and edema", False), ("edema", False)],
    "nodule": [("pulmonary nodule", True), ("{side}lung nodule", True), ("nodular opacity", True),
               ("small nodule", True)],
    "covid19": [("covid-19 pneumonia", False), ("covid-19", False),
                ("bilateral peripheral opacities consistent with covid-19", False),
                ("multifocal opacities compatible with covid-19 infection", False)],
    "infiltration": [("infiltration", False), ("a pulmonary infiltrate", False), ("infiltrates", False),
                     ("patchy infiltrates", False), ("{side}infiltrate", True)],
    "mass": [("lung mass", True), ("pulmonary mass", True), ("mass in the {side}lung", True)],
    "emphysema": [("emphysema", False), ("emphysematous changes", False), ("hyperinflated lungs", False)],
    "fibrosis": [("pulmonary fibrosis", False), ("fibrosis", False), ("fibrotic changes", False),
                 ("interstitial fibrosis", False)],
    "pleural_thickening": [("pleural thickening", False), ("{side}pleural thickening", False),
                           ("apical pleural thickening", False)],
    "hernia": [("hiatal hernia", True), ("hernia", True)],
}
PRESENT_TEMPLATES = ["{x}.", "there is {ax}.", "{x} is seen.", "{x} is present.", "findings consistent with {x}.",
                     "evidence of {x}.", "{x} noted.", "{x} is identified."]
KERMANY_TYPE = {"bacterial": ["bacterial pneumonia", "lobar pneumonia", "focal airspace consolidation "
                              "consistent with bacterial pneumonia"],
                "viral": ["viral pneumonia", "diffuse interstitial opacities consistent with viral pneumonia",
                          "bilateral peribronchial opacities suggesting viral pneumonia"]}

# the noun used in joined negations ("no X, Y or Z.") and whole negative sentences
ABSENT_NOUN = {
    "pleural_effusion": "pleural effusion", "pneumothorax": "pneumothorax", "consolidation": "focal consolidation",
    "atelectasis": "atelectasis", "pneumonia": "pneumonia", "cardiomegaly": "cardiomegaly",
    "pulmonary_edema": "pulmonary edema", "nodule": "pulmonary nodule", "covid19": "covid-19 pneumonia",
    "infiltration": "infiltrate", "mass": "lung mass", "emphysema": "emphysema", "fibrosis": "fibrosis",
    "pleural_thickening": "pleural thickening", "hernia": "hiatal hernia",
}
ABSENT_EXTRA = {
    "pleural_effusion": ["no effusion.", "no pleural effusions.", "the costophrenic angles are sharp."],
    "pneumothorax": ["no evidence of pneumothorax."],
    "consolidation": ["no consolidation.", "no airspace consolidation."],
    "pneumonia": ["no evidence of pneumonia."],
    "cardiomegaly": ["heart size is normal.", "the heart is not enlarged.", "normal heart size.",
                     "the cardiac silhouette is within normal limits.", "the cardiomediastinal silhouette is normal."],
    "pulmonary_edema": ["no edema.", "no evidence of pulmonary edema."],
    "nodule": ["no nodules.", "no suspicious pulmonary nodule."],
    "covid19": ["no evidence of covid-19.", "no findings to suggest covid-19."],
    "infiltration": ["no infiltrates."],
    "mass": ["no mass."],
}
ABSENT_TEMPLATES = ["no {n}.", "there is no {n}.", "no evidence of {n}.", "{n} is not seen."]
NORMAL = ["the lungs are clear.", "no acute cardiopulmonary abnormality.", "no acute cardiopulmonary process.",
          "normal chest radiograph.", "normal chest x-ray.", "no active disease.", "unremarkable chest radiograph.",
          "the lungs are clear without focal consolidation.", "lungs are well expanded and clear."]
ABNORMAL = ["abnormal chest radiograph.", "acute cardiopulmonary abnormality.", "there are abnormal findings.",
            "acute cardiopulmonary process."]
PREFIXES = ["", "", "", "", "findings: ", "impression: ", "chest radiograph: "]


def _fill(phrase, rng):
    return phrase.replace("{side}", rng.choice(SIDES)).replace("{size}", rng.choice(SIZES))


def present_sentence(name, rng, source_label=""):
    if name == "pneumonia" and source_label and rng.random() < 0.5:
        kind = "bacterial" if "bacterial" in source_label else "viral" if "viral" in source_label else None
        if kind:
            return rng.choice(["%s.", "findings consistent with %s.", "there is %s."]) % rng.choice(KERMANY_TYPE[kind])
    phrase, art = rng.choice(PRESENT[name])
    x = _fill(phrase, rng)
    ax = ("a " + x) if art else x
    return rng.choice(PRESENT_TEMPLATES).format(x=x, ax=ax)


def absent_sentences(names, rng):
    """Negations for the findings in names (shuffled), some joined into one sentence."""
    names = list(names)
    rng.shuffle(names)
    out = []
    while names:
        k = min(len(names), rng.choice([1, 1, 2, 3]))
        group, names = names[:k], names[k:]
        if k == 1:
            n = group[0]
            if n in ABSENT_EXTRA and rng.random() < 0.35:
                out.append(rng.choice(ABSENT_EXTRA[n]))
            else:
                out.append(rng.choice(ABSENT_TEMPLATES).format(n=ABSENT_NOUN[n]))
        else:
            nouns = [ABSENT_NOUN[n] for n in group]
            out.append("no %s or %s." % (", ".join(nouns[:-1]), nouns[-1]))
    return out


def caption(labels, rng, source_label="", max_absent=4):
    """One caption. labels: {finding name: 1, 0 or None (unknown)}."""
    sents = []
    present = [n for n in NAMES if n != "no_finding" and labels.get(n) == 1]
    absent = [n for n in NAMES if n != "no_finding" and labels.get(n) == 0]
    for n in present:
        sents.append(present_sentence(n, rng, source_label))
    nf = labels.get("no_finding")
    if nf == 1:
        sents.insert(0, rng.choice(NORMAL))
    elif nf == 0 and rng.random() < 0.4:
        sents.append(rng.choice(ABNORMAL))
    if absent:
        k = rng.randint(0, min(max_absent, len(absent)))
        if nf == 1 and "cardiomegaly" in absent and rng.random() < 0.4:
            absent.remove("cardiomegaly")
            sents.append(rng.choice(ABSENT_EXTRA["cardiomegaly"]))
        sents += absent_sentences(rng.sample(absent, min(k, len(absent))), rng)
    if not sents:  # nothing known: should not happen with this data
        sents = ["chest radiograph."]
    first = sents[:1] if nf == 1 else []
    rest = sents[len(first):]
    rng.shuffle(rest)
    return rng.choice(PREFIXES) + " ".join(first + rest)


def corpus(n_random=20000, seed=0):
    """Text for learning the BPE vocabulary: every standard prompt and phrase
    form, plus random captions over random label sets."""
    rng = random.Random(seed)
    texts = []
    for n in NAMES:
        pos, neg = STANDARD_PROMPTS[n]
        texts += pos + neg
    for n, phr in PRESENT.items():
        for p, art in phr:
            for side in SIDES:
                for size in SIZES:
                    x = p.replace("{side}", side).replace("{size}", size)
                    texts += [t.format(x=x, ax=("a " + x) if art else x) for t in PRESENT_TEMPLATES]
    for ks in KERMANY_TYPE.values():
        texts += ks
    for n in ABSENT_NOUN:
        texts += [t.format(n=ABSENT_NOUN[n]) for t in ABSENT_TEMPLATES] + ABSENT_EXTRA.get(n, [])
    texts += NORMAL + ABNORMAL + PREFIXES
    for _ in range(n_random):
        labels = {}
        nf = rng.random() < 0.4
        labels["no_finding"] = int(nf)
        for n in NAMES:
            if n == "no_finding":
                continue
            r = rng.random()
            labels[n] = 0 if nf else (1 if r < 0.15 else 0 if r < 0.7 else None)
        texts.append(caption(labels, rng, rng.choice(["", "PNEUMONIA/bacterial", "PNEUMONIA/viral"])))
    return texts


if __name__ == "__main__":
    rng = random.Random(1)
    for lab in ({"no_finding": 1, **{n: 0 for n in NAMES if n != "no_finding"}},
                {"no_finding": 0, "pneumonia": 1},
                {"no_finding": 0, "pleural_effusion": 1, "atelectasis": 1, "pneumonia": 0, "pneumothorax": 0,
                 "cardiomegaly": 0}):
        for _ in range(3):
            print(caption(lab, rng, "PNEUMONIA/viral"))
    print(len(standard_prompt_lines()), "standard prompts")
