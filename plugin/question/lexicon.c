/*
 * lexicon.c — the finding lexicon of cxrquestion as constant data: one entry
 * per finding (canonical name, English and Chinese display names, SNOMED CT
 * code where certain) and the English and Chinese phrasings that name it
 * (synonyms, lay terms, abbreviations). It owns no parsing logic and must
 * not hold mutable state; canonical names of the shipped model's findings
 * must stay exactly as they are (ask.c maps them onto the model).
 */
#include "lexicon.h"
#include "question.h"

enum {
    E_EFFUSION, E_PNEUMOTHORAX, E_CONSOLIDATION, E_ATELECTASIS, E_PNEUMONIA, E_CARDIOMEGALY,
    E_EDEMA, E_NODULE, E_COVID19, E_NO_FINDING, E_INFILTRATION, E_MASS, E_EMPHYSEMA, E_FIBROSIS,
    E_PLEURAL_THICKENING, E_HERNIA, E_ENLARGED_CM, E_LUNG_OPACITY, E_LUNG_LESION, E_FRACTURE,
    E_SUPPORT_DEVICES, E_COUNT
};

#define ENTRY(n, en, zh, sn) {.name = n, .display_en = en, .display_zh = zh, .snomed = sn, .known = 1}

/* SNOMED CT codes only where certain; "" otherwise (never guessed). */
static const cxr_qfinding k_entries[E_COUNT] = {
    [E_EFFUSION] = ENTRY("pleural_effusion", "pleural effusion", "胸腔积液", "60046008"),
    [E_PNEUMOTHORAX] = ENTRY("pneumothorax", "pneumothorax", "气胸", "36118008"),
    [E_CONSOLIDATION] = ENTRY("consolidation", "consolidation", "实变", "95436008"),
    [E_ATELECTASIS] = ENTRY("atelectasis", "atelectasis", "肺不张", "46621007"),
    [E_PNEUMONIA] = ENTRY("pneumonia", "pneumonia", "肺炎", "233604007"),
    [E_CARDIOMEGALY] = ENTRY("cardiomegaly", "cardiomegaly", "心脏增大", "8186001"),
    [E_EDEMA] = ENTRY("pulmonary_edema", "pulmonary edema", "肺水肿", "19242006"),
    [E_NODULE] = ENTRY("nodule", "pulmonary nodule", "结节", "427359005"),
    [E_COVID19] = ENTRY("covid19", "COVID-19", "新冠肺炎", "840539006"),
    [E_NO_FINDING] = ENTRY("no_finding", "no finding", "无异常", ""),
    [E_INFILTRATION] = ENTRY("infiltration", "infiltration", "浸润", ""),
    [E_MASS] = ENTRY("mass", "mass", "肿块", ""),
    [E_EMPHYSEMA] = ENTRY("emphysema", "emphysema", "肺气肿", ""),
    [E_FIBROSIS] = ENTRY("fibrosis", "pulmonary fibrosis", "肺纤维化", ""),
    [E_PLEURAL_THICKENING] = ENTRY("pleural_thickening", "pleural thickening", "胸膜增厚", ""),
    [E_HERNIA] = ENTRY("hernia", "hiatal hernia", "食管裂孔疝", ""),
    [E_ENLARGED_CM] = ENTRY("enlarged_cardiomediastinum", "enlarged cardiomediastinum", "心纵隔增宽", ""),
    [E_LUNG_OPACITY] = ENTRY("lung_opacity", "lung opacity", "肺部阴影", ""),
    [E_LUNG_LESION] = ENTRY("lung_lesion", "lung lesion", "肺部病灶", ""),
    [E_FRACTURE] = ENTRY("fracture", "fracture", "骨折", ""),
    [E_SUPPORT_DEVICES] = ENTRY("support_devices", "support devices", "支持装置（导管、插管、起搏器）", ""),
};

#define EN(t, e) {t, e, LEX_EN}
#define ZH(t, e) {t, e, LEX_ZH}
#define BLOCK_EN(t) {t, -1, LEX_EN}
#define BLOCK_ZH(t) {t, -1, LEX_ZH}

static const cxr_lex_term k_terms[] = {
    /* pleural effusion */
    EN("pleural effusion", E_EFFUSION), EN("effusion", E_EFFUSION), EN("pleural fluid", E_EFFUSION),
    EN("parapneumonic effusion", E_EFFUSION), EN("pleural collection", E_EFFUSION),
    EN("fluid around the lung", E_EFFUSION), EN("fluid on the lung", E_EFFUSION),
    EN("water on the lung", E_EFFUSION), EN("water around the lung", E_EFFUSION),
    EN("fluid in the pleural space", E_EFFUSION), EN("fluid in the chest", E_EFFUSION),
    EN("hydrothorax", E_EFFUSION), EN("blunted costophrenic angle", E_EFFUSION),
    EN("blunting of the costophrenic angle", E_EFFUSION), EN("costophrenic angle blunting", E_EFFUSION),
    EN("costophrenic blunting", E_EFFUSION), EN("blunted cp angle", E_EFFUSION),
    EN("cp angle blunting", E_EFFUSION), EN("costophrenic angle", E_EFFUSION), EN("cp angle", E_EFFUSION), EN("blunting", E_EFFUSION), EN("meniscus sign", E_EFFUSION),
    ZH("胸腔积液", E_EFFUSION), ZH("胸膜腔积液", E_EFFUSION), ZH("胸水", E_EFFUSION), ZH("积液", E_EFFUSION),
    ZH("肺积水", E_EFFUSION), ZH("肺部积水", E_EFFUSION), ZH("肺里积水", E_EFFUSION),
    ZH("肺里有水", E_EFFUSION), ZH("胸腔有水", E_EFFUSION), ZH("胸腔里有水", E_EFFUSION),
    ZH("肋膈角变钝", E_EFFUSION), ZH("肋膈角钝", E_EFFUSION), ZH("肋膈角|变钝", E_EFFUSION),
    ZH("肋膈角", E_EFFUSION),

    /* pneumothorax */
    EN("pneumothorax", E_PNEUMOTHORAX), EN("pneumothoraces", E_PNEUMOTHORAX), EN("ptx", E_PNEUMOTHORAX),
    EN("tension pneumothorax", E_PNEUMOTHORAX), EN("collapsed lung", E_PNEUMOTHORAX),
    EN("lung * collapsed", E_PNEUMOTHORAX),
    EN("punctured lung", E_PNEUMOTHORAX), EN("air around the lung", E_PNEUMOTHORAX),
    EN("air in the pleural space", E_PNEUMOTHORAX), EN("free air in the chest", E_PNEUMOTHORAX),
    EN("pleural line", E_PNEUMOTHORAX), EN("visceral pleural line", E_PNEUMOTHORAX),
    EN("deep sulcus sign", E_PNEUMOTHORAX),
    ZH("气胸", E_PNEUMOTHORAX), ZH("张力性气胸", E_PNEUMOTHORAX), ZH("肺塌陷", E_PNEUMOTHORAX),
    ZH("肺压缩", E_PNEUMOTHORAX), ZH("脏层胸膜线", E_PNEUMOTHORAX), ZH("胸膜线", E_PNEUMOTHORAX),

    /* consolidation */
    EN("consolidation", E_CONSOLIDATION), EN("consolidated", E_CONSOLIDATION),
    EN("consolidative", E_CONSOLIDATION), EN("consolidative opacity", E_CONSOLIDATION),
    EN("airspace consolidation", E_CONSOLIDATION), EN("lobar consolidation", E_CONSOLIDATION),
    EN("air bronchogram", E_CONSOLIDATION),
    ZH("实变", E_CONSOLIDATION), ZH("肺实变", E_CONSOLIDATION), ZH("实变影", E_CONSOLIDATION),
    ZH("支气管充气征", E_CONSOLIDATION), ZH("空气支气管征", E_CONSOLIDATION),

    /* atelectasis */
    EN("atelectasis", E_ATELECTASIS), EN("atelectases", E_ATELECTASIS), EN("atelectatic", E_ATELECTASIS),
    EN("plate atelectasis", E_ATELECTASIS), EN("discoid atelectasis", E_ATELECTASIS),
    EN("subsegmental atelectasis", E_ATELECTASIS), EN("linear atelectasis", E_ATELECTASIS),
    EN("collapse", E_ATELECTASIS), EN("lobar collapse", E_ATELECTASIS), EN("lobe collapse", E_ATELECTASIS),
    EN("lung collapse", E_ATELECTASIS), EN("partial collapse", E_ATELECTASIS), EN("volume loss", E_ATELECTASIS),
    ZH("肺不张", E_ATELECTASIS), ZH("不张", E_ATELECTASIS), ZH("肺膨胀不全", E_ATELECTASIS),
    ZH("盘状肺不张", E_ATELECTASIS), ZH("肺叶塌陷", E_ATELECTASIS), ZH("肺萎陷", E_ATELECTASIS),

    /* pneumonia */
    EN("pneumonia", E_PNEUMONIA), EN("pna", E_PNEUMONIA), EN("pneumonic", E_PNEUMONIA),
    EN("bronchopneumonia", E_PNEUMONIA), EN("lung infection", E_PNEUMONIA),
    EN("chest infection", E_PNEUMONIA), EN("infection", E_PNEUMONIA),
    EN("infectious process", E_PNEUMONIA), EN("infective process", E_PNEUMONIA),
    EN("aspiration pneumonia", E_PNEUMONIA), EN("aspiration", E_PNEUMONIA),
    EN("lobar pneumonia", E_PNEUMONIA), EN("bacterial pneumonia", E_PNEUMONIA),
    ZH("肺炎", E_PNEUMONIA), ZH("肺部感染", E_PNEUMONIA), ZH("肺感染", E_PNEUMONIA), ZH("感染", E_PNEUMONIA),
    ZH("支气管肺炎", E_PNEUMONIA), ZH("大叶性肺炎", E_PNEUMONIA), ZH("吸入性肺炎", E_PNEUMONIA),
    ZH("炎症", E_PNEUMONIA), ZH("炎性病变", E_PNEUMONIA),

    /* cardiomegaly */
    EN("cardiomegaly", E_CARDIOMEGALY), EN("enlarged heart", E_CARDIOMEGALY),
    EN("heart enlargement", E_CARDIOMEGALY), EN("cardiac enlargement", E_CARDIOMEGALY),
    EN("big heart", E_CARDIOMEGALY), EN("large heart", E_CARDIOMEGALY), EN("dilated heart", E_CARDIOMEGALY),
    EN("heart * enlarged", E_CARDIOMEGALY), EN("heart * big", E_CARDIOMEGALY),
    EN("heart * large", E_CARDIOMEGALY), EN("heart * larger", E_CARDIOMEGALY),
    EN("heart * bigger", E_CARDIOMEGALY), EN("heart * dilated", E_CARDIOMEGALY),
    EN("heart size", E_CARDIOMEGALY), EN("heart * size", E_CARDIOMEGALY), EN("cardiac size", E_CARDIOMEGALY),
    EN("cardiac silhouette", E_CARDIOMEGALY), EN("enlarged cardiac silhouette", E_CARDIOMEGALY),
    EN("cardiac silhouette * enlarged", E_CARDIOMEGALY), EN("heart shadow", E_CARDIOMEGALY),
    EN("cardiothoracic ratio", E_CARDIOMEGALY), EN("ctr", E_CARDIOMEGALY),
    ZH("心脏增大", E_CARDIOMEGALY), ZH("心影增大", E_CARDIOMEGALY), ZH("心脏扩大", E_CARDIOMEGALY),
    ZH("心影扩大", E_CARDIOMEGALY), ZH("心脏肥大", E_CARDIOMEGALY), ZH("心大", E_CARDIOMEGALY),
    ZH("大心脏", E_CARDIOMEGALY), ZH("心胸比", E_CARDIOMEGALY), ZH("心脏|增大", E_CARDIOMEGALY),
    ZH("心影|增大", E_CARDIOMEGALY), ZH("心脏|扩大", E_CARDIOMEGALY), ZH("心影|扩大", E_CARDIOMEGALY),
    ZH("心脏|大", E_CARDIOMEGALY), ZH("心影|大", E_CARDIOMEGALY),

    /* pulmonary edema */
    EN("pulmonary edema", E_EDEMA), EN("pulmonary oedema", E_EDEMA), EN("edema", E_EDEMA),
    EN("oedema", E_EDEMA), EN("lung edema", E_EDEMA), EN("interstitial edema", E_EDEMA),
    EN("alveolar edema", E_EDEMA), EN("fluid overload", E_EDEMA), EN("volume overload", E_EDEMA),
    EN("chf", E_EDEMA), EN("congestive heart failure", E_EDEMA), EN("heart failure", E_EDEMA),
    EN("cardiac failure", E_EDEMA), EN("fluid in the lung", E_EDEMA), EN("water in the lung", E_EDEMA),
    EN("wet lung", E_EDEMA), EN("pulmonary congestion", E_EDEMA), EN("vascular congestion", E_EDEMA),
    EN("pulmonary venous congestion", E_EDEMA), EN("pulmonary vascular congestion", E_EDEMA),
    EN("congestion", E_EDEMA), EN("kerley line", E_EDEMA), EN("kerley b line", E_EDEMA),
    EN("septal line", E_EDEMA), EN("cephalization", E_EDEMA), EN("batwing", E_EDEMA),
    EN("bat wing", E_EDEMA),
    ZH("肺水肿", E_EDEMA), ZH("水肿", E_EDEMA), ZH("肺间质水肿", E_EDEMA), ZH("肺淤血", E_EDEMA),
    ZH("肺充血", E_EDEMA), ZH("心衰", E_EDEMA), ZH("心力衰竭", E_EDEMA), ZH("充血性心力衰竭", E_EDEMA),
    ZH("克氏线", E_EDEMA), ZH("克利b线", E_EDEMA), ZH("蝶翼征", E_EDEMA),

    /* nodule */
    EN("nodule", E_NODULE), EN("pulmonary nodule", E_NODULE), EN("lung nodule", E_NODULE),
    EN("nodular", E_NODULE), EN("nodular opacity", E_NODULE), EN("micronodule", E_NODULE),
    EN("spot on the lung", E_NODULE), EN("lung spot", E_NODULE), EN("coin lesion", E_NODULE),
    ZH("结节", E_NODULE), ZH("肺结节", E_NODULE), ZH("小结节", E_NODULE), ZH("肺部结节", E_NODULE),
    ZH("结节影", E_NODULE), ZH("肺小结节", E_NODULE), ZH("磨玻璃结节", E_NODULE), ZH("钱币样病变", E_NODULE),

    /* COVID-19 */
    EN("covid", E_COVID19), EN("covid 19", E_COVID19), EN("covid19", E_COVID19),
    EN("covid pneumonia", E_COVID19), EN("covid 19 pneumonia", E_COVID19), EN("covid19 pneumonia", E_COVID19),
    EN("coronavirus", E_COVID19), EN("corona", E_COVID19), EN("sars cov 2", E_COVID19),
    EN("sars cov2", E_COVID19), EN("sarscov2", E_COVID19), EN("ncov", E_COVID19),
    ZH("新冠", E_COVID19), ZH("新冠肺炎", E_COVID19), ZH("新冠病毒", E_COVID19), ZH("新冠感染", E_COVID19),
    ZH("新型冠状病毒", E_COVID19), ZH("新型冠状病毒肺炎", E_COVID19), ZH("冠状病毒", E_COVID19),

    /* no finding (turned into an overview question by the parser) */
    EN("no finding", E_NO_FINDING), EN("normal", E_NO_FINDING), EN("unremarkable", E_NO_FINDING),
    EN("nothing abnormal", E_NO_FINDING), EN("no abnormality", E_NO_FINDING),
    EN("no abnormal finding", E_NO_FINDING), EN("clear lung", E_NO_FINDING), EN("lung * clear", E_NO_FINDING),
    EN("no acute cardiopulmonary process", E_NO_FINDING), EN("no acute process", E_NO_FINDING),
    EN("no acute disease", E_NO_FINDING), EN("within normal limit", E_NO_FINDING), EN("wnl", E_NO_FINDING),
    ZH("正常", E_NO_FINDING), ZH("无异常", E_NO_FINDING), ZH("未见异常", E_NO_FINDING),
    ZH("没有异常", E_NO_FINDING), ZH("无明显异常", E_NO_FINDING), ZH("未见明显异常", E_NO_FINDING),
    ZH("无阳性发现", E_NO_FINDING),

    /* infiltration */
    EN("infiltration", E_INFILTRATION), EN("infiltrate", E_INFILTRATION),
    EN("infiltrative", E_INFILTRATION), EN("pulmonary infiltrate", E_INFILTRATION),
    ZH("浸润", E_INFILTRATION), ZH("浸润影", E_INFILTRATION), ZH("肺浸润", E_INFILTRATION),
    ZH("渗出", E_INFILTRATION), ZH("渗出影", E_INFILTRATION),

    /* mass */
    EN("mass", E_MASS), EN("lung mass", E_MASS), EN("pulmonary mass", E_MASS),
    EN("mediastinal mass", E_MASS), EN("hilar mass", E_MASS), EN("tumor", E_MASS), EN("tumour", E_MASS),
    EN("lung cancer", E_MASS), EN("cancer", E_MASS), EN("malignancy", E_MASS), EN("neoplasm", E_MASS),
    EN("carcinoma", E_MASS), EN("growth", E_MASS),
    ZH("肿块", E_MASS), ZH("肿物", E_MASS), ZH("肿瘤", E_MASS), ZH("肺癌", E_MASS), ZH("占位", E_MASS),
    ZH("占位性病变", E_MASS), ZH("癌", E_MASS), ZH("恶性肿瘤", E_MASS), ZH("新生物", E_MASS),
    ZH("包块", E_MASS),

    /* emphysema */
    EN("emphysema", E_EMPHYSEMA), EN("emphysematous", E_EMPHYSEMA),
    EN("emphysematous change", E_EMPHYSEMA), EN("bullous emphysema", E_EMPHYSEMA),
    EN("centrilobular emphysema", E_EMPHYSEMA), EN("panlobular emphysema", E_EMPHYSEMA),
    EN("copd", E_EMPHYSEMA), EN("chronic obstructive pulmonary disease", E_EMPHYSEMA),
    EN("hyperinflation", E_EMPHYSEMA), EN("hyperinflated", E_EMPHYSEMA),
    EN("hyperexpanded", E_EMPHYSEMA), EN("hyperexpansion", E_EMPHYSEMA), EN("overinflated", E_EMPHYSEMA),
    EN("overinflation", E_EMPHYSEMA), EN("hyperlucent lung", E_EMPHYSEMA), EN("hyperlucency", E_EMPHYSEMA),
    EN("flattened diaphragm", E_EMPHYSEMA), EN("flat diaphragm", E_EMPHYSEMA),
    ZH("肺气肿", E_EMPHYSEMA), ZH("慢阻肺", E_EMPHYSEMA), ZH("慢性阻塞性肺疾病", E_EMPHYSEMA),
    ZH("过度充气", E_EMPHYSEMA), ZH("肺过度充气", E_EMPHYSEMA), ZH("桶状胸", E_EMPHYSEMA),

    /* fibrosis */
    EN("fibrosis", E_FIBROSIS), EN("pulmonary fibrosis", E_FIBROSIS), EN("lung fibrosis", E_FIBROSIS),
    EN("interstitial fibrosis", E_FIBROSIS), EN("fibrotic", E_FIBROSIS), EN("fibrotic change", E_FIBROSIS),
    EN("honeycombing", E_FIBROSIS), EN("honeycomb lung", E_FIBROSIS), EN("scarring", E_FIBROSIS),
    EN("lung scarring", E_FIBROSIS), EN("scar", E_FIBROSIS), EN("ipf", E_FIBROSIS),
    ZH("肺纤维化", E_FIBROSIS), ZH("纤维化", E_FIBROSIS), ZH("间质纤维化", E_FIBROSIS),
    ZH("肺间质纤维化", E_FIBROSIS), ZH("蜂窝肺", E_FIBROSIS), ZH("纤维灶", E_FIBROSIS),
    ZH("纤维条索", E_FIBROSIS), ZH("瘢痕", E_FIBROSIS), ZH("疤痕", E_FIBROSIS),

    /* pleural thickening */
    EN("pleural thickening", E_PLEURAL_THICKENING), EN("thickened pleura", E_PLEURAL_THICKENING),
    EN("pleura * thickened", E_PLEURAL_THICKENING), EN("pleural plaque", E_PLEURAL_THICKENING),
    EN("pleural scarring", E_PLEURAL_THICKENING),
    ZH("胸膜增厚", E_PLEURAL_THICKENING), ZH("胸膜肥厚", E_PLEURAL_THICKENING),
    ZH("胸膜|增厚", E_PLEURAL_THICKENING), ZH("胸膜斑", E_PLEURAL_THICKENING),
    ZH("胸膜粘连", E_PLEURAL_THICKENING),

    /* hernia: ChestX-ray14's "Hernia" is a hiatal hernia */
    EN("hernia", E_HERNIA), EN("hiatal hernia", E_HERNIA), EN("hiatus hernia", E_HERNIA),
    EN("diaphragmatic hernia", E_HERNIA),
    ZH("食管裂孔疝", E_HERNIA), ZH("食道裂孔疝", E_HERNIA), ZH("裂孔疝", E_HERNIA), ZH("膈疝", E_HERNIA),
    ZH("疝", E_HERNIA),

    /* enlarged cardiomediastinum */
    EN("enlarged cardiomediastinum", E_ENLARGED_CM), EN("cardiomediastinum", E_ENLARGED_CM),
    EN("cardiomediastinal silhouette", E_ENLARGED_CM), EN("widened mediastinum", E_ENLARGED_CM),
    EN("wide mediastinum", E_ENLARGED_CM), EN("enlarged mediastinum", E_ENLARGED_CM),
    EN("mediastinal widening", E_ENLARGED_CM), EN("mediastinal enlargement", E_ENLARGED_CM),
    EN("widening of the mediastinum", E_ENLARGED_CM), EN("mediastinum * widened", E_ENLARGED_CM),
    EN("mediastinum * wide", E_ENLARGED_CM), EN("mediastinum * enlarged", E_ENLARGED_CM),
    EN("mediastinum", E_ENLARGED_CM),
    ZH("纵隔增宽", E_ENLARGED_CM), ZH("纵隔|增宽", E_ENLARGED_CM), ZH("纵隔增大", E_ENLARGED_CM),
    ZH("纵隔|宽", E_ENLARGED_CM), ZH("上纵隔增宽", E_ENLARGED_CM), ZH("心纵隔增宽", E_ENLARGED_CM),
    ZH("纵隔", E_ENLARGED_CM),

    /* lung opacity */
    EN("opacity", E_LUNG_OPACITY), EN("lung opacity", E_LUNG_OPACITY), EN("pulmonary opacity", E_LUNG_OPACITY),
    EN("airspace opacity", E_LUNG_OPACITY), EN("airspace disease", E_LUNG_OPACITY),
    EN("patchy opacity", E_LUNG_OPACITY), EN("opacification", E_LUNG_OPACITY), EN("haziness", E_LUNG_OPACITY),
    EN("hazy", E_LUNG_OPACITY), EN("shadow", E_LUNG_OPACITY), EN("shadowing", E_LUNG_OPACITY),
    EN("ground glass", E_LUNG_OPACITY), EN("ground glass opacity", E_LUNG_OPACITY), EN("ggo", E_LUNG_OPACITY),
    ZH("阴影", E_LUNG_OPACITY), ZH("肺部阴影", E_LUNG_OPACITY), ZH("密度增高影", E_LUNG_OPACITY),
    ZH("高密度影", E_LUNG_OPACITY), ZH("磨玻璃", E_LUNG_OPACITY), ZH("磨玻璃影", E_LUNG_OPACITY),
    ZH("斑片影", E_LUNG_OPACITY), ZH("片状影", E_LUNG_OPACITY), ZH("模糊影", E_LUNG_OPACITY),
    ZH("白肺", E_LUNG_OPACITY),

    /* lung lesion */
    EN("lesion", E_LUNG_LESION), EN("lung lesion", E_LUNG_LESION), EN("pulmonary lesion", E_LUNG_LESION),
    EN("cavity", E_LUNG_LESION), EN("cavitation", E_LUNG_LESION), EN("cavitary lesion", E_LUNG_LESION),
    ZH("病灶", E_LUNG_LESION), ZH("肺部病灶", E_LUNG_LESION), ZH("肺病灶", E_LUNG_LESION),
    ZH("空洞", E_LUNG_LESION), ZH("空洞性病变", E_LUNG_LESION),

    /* fracture (chest: ribs, clavicles, spine on the film) */
    EN("fracture", E_FRACTURE), EN("fractured", E_FRACTURE), EN("rib fracture", E_FRACTURE),
    EN("fractured rib", E_FRACTURE), EN("broken rib", E_FRACTURE), EN("rib * broken", E_FRACTURE),
    EN("broken bone", E_FRACTURE), EN("bone * broken", E_FRACTURE), EN("clavicle fracture", E_FRACTURE),
    ZH("骨折", E_FRACTURE), ZH("肋骨骨折", E_FRACTURE), ZH("锁骨骨折", E_FRACTURE), ZH("肋骨|断", E_FRACTURE),
    ZH("骨头|断", E_FRACTURE),

    /* support devices: tubes, lines, pacemakers */
    EN("support device", E_SUPPORT_DEVICES), EN("device", E_SUPPORT_DEVICES), EN("tube", E_SUPPORT_DEVICES),
    EN("line", E_SUPPORT_DEVICES), EN("catheter", E_SUPPORT_DEVICES), EN("pacemaker", E_SUPPORT_DEVICES),
    EN("pacemaker lead", E_SUPPORT_DEVICES), EN("pacing lead", E_SUPPORT_DEVICES), EN("pacer", E_SUPPORT_DEVICES),
    EN("icd", E_SUPPORT_DEVICES), EN("aicd", E_SUPPORT_DEVICES), EN("defibrillator", E_SUPPORT_DEVICES),
    EN("ett", E_SUPPORT_DEVICES), EN("et tube", E_SUPPORT_DEVICES), EN("endotracheal tube", E_SUPPORT_DEVICES),
    EN("intubated", E_SUPPORT_DEVICES), EN("ng tube", E_SUPPORT_DEVICES), EN("ngt", E_SUPPORT_DEVICES),
    EN("nasogastric tube", E_SUPPORT_DEVICES), EN("og tube", E_SUPPORT_DEVICES),
    EN("feeding tube", E_SUPPORT_DEVICES), EN("dobhoff", E_SUPPORT_DEVICES), EN("chest tube", E_SUPPORT_DEVICES),
    EN("chest drain", E_SUPPORT_DEVICES), EN("pleural drain", E_SUPPORT_DEVICES),
    EN("pigtail", E_SUPPORT_DEVICES), EN("picc", E_SUPPORT_DEVICES), EN("picc line", E_SUPPORT_DEVICES),
    EN("central line", E_SUPPORT_DEVICES), EN("central venous catheter", E_SUPPORT_DEVICES),
    EN("cvc", E_SUPPORT_DEVICES), EN("port", E_SUPPORT_DEVICES), EN("port a cath", E_SUPPORT_DEVICES),
    EN("portacath", E_SUPPORT_DEVICES), EN("swan ganz", E_SUPPORT_DEVICES),
    EN("tracheostomy", E_SUPPORT_DEVICES), EN("trach", E_SUPPORT_DEVICES),
    EN("sternotomy wire", E_SUPPORT_DEVICES), EN("stent", E_SUPPORT_DEVICES), EN("hardware", E_SUPPORT_DEVICES),
    ZH("导管", E_SUPPORT_DEVICES), ZH("插管", E_SUPPORT_DEVICES), ZH("气管插管", E_SUPPORT_DEVICES),
    ZH("气管导管", E_SUPPORT_DEVICES), ZH("起搏器", E_SUPPORT_DEVICES), ZH("心脏起搏器", E_SUPPORT_DEVICES),
    ZH("胸腔引流管", E_SUPPORT_DEVICES), ZH("引流管", E_SUPPORT_DEVICES), ZH("中心静脉导管", E_SUPPORT_DEVICES),
    ZH("中心静脉置管", E_SUPPORT_DEVICES), ZH("胃管", E_SUPPORT_DEVICES), ZH("鼻胃管", E_SUPPORT_DEVICES),
    ZH("输液港", E_SUPPORT_DEVICES), ZH("除颤器", E_SUPPORT_DEVICES), ZH("气切套管", E_SUPPORT_DEVICES),
    ZH("置管", E_SUPPORT_DEVICES), ZH("管路", E_SUPPORT_DEVICES), ZH("管线", E_SUPPORT_DEVICES),
    ZH("导线", E_SUPPORT_DEVICES), ZH("支架", E_SUPPORT_DEVICES), ZH("植入物", E_SUPPORT_DEVICES),

    /* blockers: other findings whose names contain a lexicon word */
    BLOCK_EN("pericardial effusion"), BLOCK_EN("pericardial fluid"), BLOCK_EN("subcutaneous emphysema"),
    BLOCK_EN("surgical emphysema"), BLOCK_EN("soft tissue emphysema"), BLOCK_EN("subcutaneous air"),
    BLOCK_ZH("心包积液"), BLOCK_ZH("皮下气肿"), BLOCK_ZH("纵隔气肿"), BLOCK_ZH("纵隔积气"),
};

int cxr_lexicon_size(void) { return E_COUNT; }

const cxr_qfinding *cxr_lexicon_entry(int i) {
    if (i < 0 || i >= E_COUNT) return NULL;
    return &k_entries[i];
}

int cxr_lex_term_count(void) { return (int)(sizeof k_terms / sizeof k_terms[0]); }

const cxr_lex_term *cxr_lex_term_at(int i) {
    if (i < 0 || i >= cxr_lex_term_count()) return NULL;
    return &k_terms[i];
}
