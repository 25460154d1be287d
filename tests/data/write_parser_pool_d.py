"""Write `parser_pool_d.jsonl`: pool D, answers to the ECG prompt written one by one.

Pool D is a tuning set built by a different method than the generated pools A-C and the
held-out set: each answer below was typed by hand in the style of a different VLM
(MedGemma-style step-by-step markdown, terse one-liners, JSON-ish, tables, restated option
lists, hedges, refusals, cut-offs with finish_reason "length", verdict first then reasoning,
synonym spellings). `expected` follows the project's labelling rules: a label comes only
from a verdict; no verdict (refusal, conditional, undecided "X or Y", cut off before or
inside the verdict) is null; a hedged but committed verdict counts; negated labels are not
verdicts; old/prior/healed MI is POST_MI; acute MI/STEMI is MYOCARDIAL_INFARCTION.

Run: `python tests/data/write_parser_pool_d.py` (rewrites the JSONL next to this file).
"""

# ruff: noqa: E501 - answers are data, kept one per line to read them as a model wrote them

from __future__ import annotations

import json
from pathlib import Path

N, AH, MI, PMI = "NORMAL", "ABNORMAL_HEARTBEAT", "MYOCARDIAL_INFARCTION", "POST_MI"
S, L = "stop", "length"

STEPS = (
    "**STEP 1 - RATE AND RHYTHM:**\n- Heart rate approximately 75 bpm, normal.\n"
    "- Rhythm regular, P before every QRS.\n\n**STEP 2 - P WAVES:**\n- Upright in I, II, aVF.\n\n"
)

# (text, finish_reason, expected, trap)
# fmt: off
ANSWERS: list[tuple[str, str, str | None, str]] = [
    (STEPS + "**STEP 6 - Q WAVES:** Deep Q waves in II, III, aVF, no ST elevation.\n\n**FINAL CLASSIFICATION:** POST_MI", S, PMI, "medgemma_steps"),
    (STEPS + "**STEP 5 - ST SEGMENT:** 3 mm ST elevation V1-V4.\n\n**Final Answer:** MYOCARDIAL_INFARCTION", S, MI, "medgemma_steps"),
    (STEPS + "**STEP 5 - ST SEGMENT:** Isoelectric.\n**STEP 6:** No pathological Q waves.\n\n**Classification: NORMAL**", S, N, "medgemma_steps"),
    ("**STEP 1 - RATE AND RHYTHM:**\n- Rate ~110 bpm, irregularly irregular, no discernible P waves.\n\n**Conclusion:** The findings are consistent with atrial fibrillation.\n\n**Classification:** ABNORMAL_HEARTBEAT", S, AH, "medgemma_steps"),
    (STEPS + "**STEP 5 - ST SEGMENT:** There is ST elevation in leads", L, None, "truncated_before_verdict"),
    (STEPS + "**STEP 6 - Q WAVES:** Q waves in V1-V3.\n\n**FINAL CLASSIFICATION:** POS", L, None, "truncated_inside_verdict"),
    ("NORMAL", S, N, "terse"),
    ("POST_MI", S, PMI, "terse"),
    ("Answer: ABNORMAL_HEARTBEAT", S, AH, "terse"),
    ("myocardial_infarction", S, MI, "terse_lower"),
    ("Classification: post_mi", S, PMI, "terse_lower"),
    ("normal.", S, N, "terse_lower"),
    ("STEMI.", S, MI, "terse_synonym"),
    ("Old MI.", S, PMI, "terse_synonym"),
    ("Arrhythmia", S, AH, "terse_synonym"),
    ("Within normal limits.", S, N, "terse_synonym"),
    ('{"classification": "POST_MI", "confidence": 0.78}', S, PMI, "json"),
    ('```json\n{\n  "rate": 72,\n  "rhythm": "sinus",\n  "classification": "NORMAL"\n}\n```', S, N, "json"),
    ('{"diagnosis": "MYOCARDIAL_INFARCTION", "reasoning": "ST elevation in II, III, aVF with reciprocal changes"}', S, MI, "json"),
    ('{"answer": "ABNORMAL_HEARTBEAT", "notes": "not NORMAL: frequent PVCs"}', S, AH, "json"),
    ('{"classification": null, "reason": "image quality insufficient"}', S, None, "json_null"),
    ('{"classification": "POST', L, None, "json_truncated"),
    ("| Step | Finding |\n|---|---|\n| Rate | 68 bpm |\n| Rhythm | regular sinus |\n| Q waves | pathological in V1-V4 |\n| ST | isoelectric |\n| **Classification** | **POST_MI** |", S, PMI, "table"),
    ("| Parameter | Value |\n|---|---|\n| Rate | 140 |\n| Rhythm | narrow complex, regular, no P waves (SVT) |\n\n**Final classification: ABNORMAL_HEARTBEAT**", S, AH, "table"),
    ("| Label | Present? |\n|---|---|\n| NORMAL | No |\n| ABNORMAL_HEARTBEAT | No |\n| MYOCARDIAL_INFARCTION | Yes |\n| POST_MI | No |", S, MI, "table_yes_no"),
    ("| Label | Fits? |\n|---|---|\n| NORMAL | ❌ |\n| ABNORMAL_HEARTBEAT | ✅ |\n| MYOCARDIAL_INFARCTION | ❌ |\n| POST_MI | ❌ |\n\nAnswer: ABNORMAL_HEARTBEAT", S, AH, "option_list"),
    ("Options:\n- NORMAL ❌\n- ABNORMAL_HEARTBEAT ❌\n- MYOCARDIAL_INFARCTION ❌\n- POST_MI ✅\n\n**Answer: POST_MI**", S, PMI, "option_list"),
    ("The possible classifications are NORMAL, ABNORMAL_HEARTBEAT, MYOCARDIAL_INFARCTION and POST_MI. Based on the Q waves in the inferior leads without ST elevation, I choose POST_MI.", S, PMI, "restated_options"),
    ("You asked me to choose between NORMAL, ABNORMAL_HEARTBEAT, MYOCARDIAL_INFARCTION, and POST_MI.", S, None, "restated_options_no_verdict"),
    ("Choices: NORMAL / ABNORMAL_HEARTBEAT / MYOCARDIAL_INFARCTION / POST_MI\n\nMy pick: NORMAL", S, N, "restated_options"),
    ("The categories are:\n1. NORMAL\n2. ABNORMAL_HEARTBEAT\n3. MYOCARDIAL_INFARCTION\n4. POST_MI\n\nLooking at the rhythm strip in lead II, the", L, None, "restated_options_truncated"),
    ("Most likely POST_MI, given the Q waves in III and aVF without ST changes.", S, PMI, "hedged"),
    ("This probably represents an old inferior infarct. Classification: POST_MI (moderate confidence).", S, PMI, "hedged"),
    ("I would lean towards ABNORMAL_HEARTBEAT because of the irregular RR intervals.", S, AH, "hedged"),
    ("Final answer: likely MYOCARDIAL_INFARCTION.", S, MI, "hedged"),
    ("Impression: probable acute inferior STEMI.", S, MI, "hedged_synonym"),
    ("Classification: MYOCARDIAL_INFARCTION (most likely). POST_MI would apply if the ST segments were isoelectric.", S, MI, "hedged_would_apply"),
    ("Most consistent with NORMAL. If there were Q waves, POST_MI would be more appropriate.", S, N, "hedged_would_apply"),
    ("I cannot provide a medical diagnosis. Please consult a qualified cardiologist to interpret this ECG.", S, None, "refusal"),
    ("I'm sorry, but I can't interpret this image reliably; the tracing is too blurry to classify.", S, None, "refusal"),
    ("As an AI, I am not able to classify ECGs for clinical use. The tracing shows sinus rhythm with Q waves in V1-V3, but I cannot confidently assign a single classification.", S, None, "refusal_with_findings"),
    ("I cannot determine the classification from this image. Findings: irregularly irregular rhythm, no P waves.", S, None, "refusal_with_findings"),
    ("The image does not appear to be an ECG. Unable to classify.", S, None, "refusal"),
    ("If the ST elevation is new, this would be MYOCARDIAL_INFARCTION; if it is old with Q waves, POST_MI.", S, None, "conditional"),
    ("If the irregularity is real and not artefact, the classification would be ABNORMAL_HEARTBEAT.", S, None, "conditional"),
    ("Without a prior ECG for comparison, this could be MYOCARDIAL_INFARCTION or POST_MI.", S, None, "undecided"),
    ("Classification: MYOCARDIAL_INFARCTION or POST_MI; clinical correlation required.", S, None, "undecided"),
    ("Either NORMAL or ABNORMAL_HEARTBEAT — the strip is too short to be sure.", S, None, "undecided"),
    ("POST_MI\n\nReasoning: Pathological Q waves in II, III, aVF; no ST elevation; T waves upright. No arrhythmia.", S, PMI, "verdict_first"),
    ("NORMAL.\n\nRate 72, regular sinus rhythm, normal axis, no Q waves, no ST changes, normal T waves. This is not MYOCARDIAL_INFARCTION.", S, N, "verdict_first_then_negation"),
    ("ABNORMAL_HEARTBEAT — frequent PVCs in a bigeminal pattern. Not NORMAL, no evidence of MYOCARDIAL_INFARCTION or POST_MI.", S, AH, "verdict_first_then_negation"),
    ("**MYOCARDIAL_INFARCTION**\n\nST elevation in V2-V5 with hyperacute T waves. There is no sign of an old infarct.", S, MI, "verdict_first"),
    ("Diagnosis: Acute anterior STEMI.", S, MI, "diagnosis_synonym"),
    ("Diagnosis: prior inferior infarct.", S, PMI, "diagnosis_synonym"),
    ("Diagnosis: atrial flutter with 2:1 block.", S, AH, "diagnosis_synonym"),
    ("Impression: Normal sinus rhythm. Normal ECG.", S, N, "impression_synonym"),
    ("Impression: Old anteroseptal myocardial infarction. No acute changes.", S, PMI, "impression_synonym"),
    ("IMPRESSION: ATRIAL FIBRILLATION WITH RAPID VENTRICULAR RESPONSE", S, AH, "caps_synonym"),
    ("FINAL ANSWER: POST_MI", S, PMI, "caps"),
    ("Final Answer: __NORMAL__", S, N, "underscores"),
    ("Final answer: *ABNORMAL_HEARTBEAT*", S, AH, "emphasis"),
    ("Final answer: `MYOCARDIAL_INFARCTION`", S, MI, "backticks"),
    ("The ECG is not NORMAL. There are deep Q waves in V1-V3 without ST elevation.\n\nClassification: **POST_MI**", S, PMI, "not_normal_then_verdict"),
    ("This is not a normal ECG. Final classification: ABNORMAL_HEARTBEAT.", S, AH, "not_normal_then_verdict"),
    ("There is no ST elevation, no pathological Q waves, no arrhythmia, and no sign of MYOCARDIAL_INFARCTION or POST_MI. Classification: NORMAL", S, N, "negations_then_verdict"),
    ("No ST elevation. No Q waves. No arrhythmia. No AV block.", S, None, "negations_only"),
    ("Findings: prior (healed) anterior myocardial infarction; no acute ST changes.\nClassification: POST_MI", S, PMI, "prior_healed"),
    ("Impression: prior (healed) anterior myocardial infarction.", S, PMI, "prior_healed"),
    ("Impression: healed inferior myocardial infarction, no acute injury.", S, PMI, "prior_healed"),
    ("Assessment: history of myocardial infarction (Q waves V1-V3).", S, PMI, "history_of"),
    ("Assessment: evidence of an old MI.", S, PMI, "old_mi"),
    ("The tracing shows sinus rhythm with Q waves in II, III and aVF, suggestive of a remote inferior infarct. Classification: POST_MI.", S, PMI, "remote"),
    ("Rhythm: sinus at 64 bpm.\nAxis: normal.\nIntervals: PR 160, QRS 90, QTc 410.\nST/T: normal.\n\nInterpretation: Normal ECG.", S, N, "interpretation"),
    ("Rhythm: sinus at 64 bpm.\nAxis: normal.\nIntervals: PR 160, QRS 90, QTc 410.\nST/T: normal.\n\nInterpretation:", L, None, "truncated_at_label"),
    ("Based on my analysis, the final classification is", L, None, "truncated_before_verdict"),
    ("Based on my analysis, the final classification is MYOCARDIAL_INF", L, None, "truncated_inside_verdict"),
    ("Based on my analysis, the final classification is NORMAL.", S, N, "plain"),
    ("The rhythm is irregularly irregular with absent P waves and a ventricular rate of about 120 bpm, which is atrial fibrillation.\n\nFinal classification: ABNORMAL_HEARTBEAT", S, AH, "reasoning_then_verdict"),
    ("The rhythm is irregularly irregular with absent P waves and a ventricular rate of about 120 bpm, which is", L, None, "truncated_reasoning"),
    ("Step-by-step:\n1. Rate: 58 bpm (mild bradycardia)\n2. Rhythm: regular sinus\n3. Q waves: none\n4. ST: normal\n5. T waves: normal\n\nAlthough the rate is slightly below 60, the tracing is otherwise normal.\n\n**Classification: NORMAL**", S, N, "steps_numbered"),
    ("Step-by-step:\n1. Rate: 80 bpm\n2. Rhythm: regular\n3. Q waves: V1-V4, pathological\n4. ST: isoelectric\n5. T: inverted V1-V3\n\n**Classification:", L, None, "truncated_at_label"),
    ("## ECG Interpretation\n\n### Rate and Rhythm\nSinus rhythm, 70 bpm.\n\n### ST Segments\nST elevation 2 mm in II, III, aVF; reciprocal depression in I, aVL.\n\n### Conclusion\nAcute inferior myocardial infarction.\n\n**Final classification: MYOCARDIAL_INFARCTION**", S, MI, "markdown_headers"),
    ("## ECG Interpretation\n\n### Rate and Rhythm\nSinus rhythm, 70 bpm.\n\n### Q Waves\nPathological Q waves in V1-V3.\n\n### Conclusion\nPOST_MI", S, PMI, "markdown_headers"),
    ("## Summary\n\n- Rate: normal\n- Rhythm: frequent premature ventricular contractions\n- ST: normal\n\n## Classification\n\nABNORMAL_HEARTBEAT", S, AH, "markdown_headers"),
    ("## Summary\n\n- Rate: normal\n- Rhythm: regular\n\n## Classification\n\n", L, None, "truncated_at_header"),
    ("Classification → POST_MI", S, PMI, "arrow"),
    ("Result = NORMAL", S, N, "equals"),
    ("Category: Abnormal Heartbeat", S, AH, "spaced_label"),
    ("Category: Myocardial Infarction", S, MI, "spaced_label"),
    ("Category: Post MI", S, PMI, "spaced_label"),
    ("Category: Post-MI", S, PMI, "spaced_label"),
    ("The answer is **Post MI**.", S, PMI, "spaced_label"),
    ("This ECG demonstrates ventricular bigeminy. ABNORMAL_HEARTBEAT.", S, AH, "synonym_then_label"),
    ("Sinus rhythm with first-degree AV block. Classification: ABNORMAL_HEARTBEAT.", S, AH, "synonym_then_label"),
    ("The ECG shows an NSTEMI pattern with diffuse ST depression. Classification: MYOCARDIAL_INFARCTION", S, MI, "nstemi"),
    ("Although an old MI cannot be excluded, the ST elevation indicates an acute process. Final: MYOCARDIAL_INFARCTION", S, MI, "cannot_exclude_then_verdict"),
    ("Acute MI cannot be excluded. Classification: POST_MI.", S, PMI, "cannot_exclude_then_verdict"),
    ("NORMAL cannot be ruled out, but given the irregular rhythm my answer is ABNORMAL_HEARTBEAT.", S, AH, "ruled_out_then_verdict"),
    ("I'm not certain. It could be NORMAL.", S, None, "could_be_only"),
    ("I'm fairly confident this is POST_MI.", S, PMI, "confident"),
    ("My best guess would be MYOCARDIAL_INFARCTION, though a repeat ECG is advised.", S, MI, "best_guess"),
    ("This is an ECG of a patient with a history of myocardial infarction. Final answer: POST_MI", S, PMI, "history_then_verdict"),
    ("This is an ECG of a patient with chest pain. The ST segments are elevated in", L, None, "truncated_reasoning"),
    ("The ECG is within normal limits.", S, N, "wnl"),
    ("Normal sinus rhythm, within normal limits. No evidence of MI.", S, N, "wnl_negation"),
    ("Sinus rhythm. Otherwise normal ECG.", S, N, "otherwise_normal"),
    ("Abnormal ECG.", S, None, "abnormal_ecg_unspecified"),
    ("The ECG is abnormal. I cannot determine whether this is MYOCARDIAL_INFARCTION or POST_MI without clinical history.", S, None, "abnormal_undecided"),
    ("The ECG shows a heart attack in progress (ST elevation V1-V5).", S, MI, "lay_synonym"),
    ("The ECG shows evidence of a previous heart attack.", S, PMI, "lay_synonym_prior"),
    ("Classification: NORMAL\nConfidence: high\nKey findings: regular sinus rhythm at 70 bpm; no ST/T changes; no Q waves.", S, N, "key_value"),
    ("Classification: ABNORMAL_HEARTBEAT\nConfidence: medium\nKey findings: irregular rhythm, possible AFib; no ST elevation (not MYOCARDIAL_INFARCTION).", S, AH, "key_value"),
    ("Confidence: low\nClassification: POST_MI\nKey findings: Q waves III, aVF", S, PMI, "key_value"),
    ("classification:normal", S, N, "no_space"),
    ("Final classification - POST MI", S, PMI, "dash_spaced"),
    ("Answer: D) POST_MI", S, PMI, "lettered"),
    ("A) NORMAL\nB) ABNORMAL_HEARTBEAT\nC) MYOCARDIAL_INFARCTION\nD) POST_MI\n\nAnswer: C", S, MI, "lettered_only"),
    ("**Verdict:** ABNORMAL_HEARTBEAT (ventricular tachycardia).", S, AH, "verdict_word"),
    ("**Verdict:** pending — need a longer rhythm strip.", S, None, "verdict_pending"),
    ("Classification: UNKNOWN", S, None, "unknown_label"),
    ("Classification: none of the above.", S, None, "none_of_above"),
    ("Classification: N/A (non-diagnostic image)", S, None, "not_applicable"),
    ("", L, None, "empty"),
    ("<think>\nThe Q waves are deep... maybe POST_MI? But ST elevation in V2... so MYOCARDIAL_INFARCTION.\n</think>\n\nFinal answer: MYOCARDIAL_INFARCTION", S, MI, "think_block"),
    ("<think>\nRate 75, regular. Q waves in V1-V3. ST isoelectric. So the answer is probably POST_MI, but let me check the T waves", L, None, "think_truncated"),
    ("The pattern (Q waves V1-V4, T inversion, no ST elevation) represents an old anterior MI.\n\nClassification: POST_MI", S, PMI, "old_mi_then_label"),
    ("Signs of acute ischemia are absent. Signs of arrhythmia are absent. Q waves absent.\nTherefore: NORMAL", S, N, "absent_then_therefore"),
    ("Final answer: NORMAL. (Note: MYOCARDIAL_INFARCTION would apply if ST elevation were present.)", S, N, "would_apply_note"),
    ("Final answer: ABNORMAL_HEARTBEAT\n\nDifferential: POST_MI was considered but Q waves are not pathological.", S, AH, "differential_after"),
    ("Differential diagnosis: MYOCARDIAL_INFARCTION vs POST_MI. Favoured: POST_MI.", S, PMI, "favoured"),
    ("Differential diagnosis: MYOCARDIAL_INFARCTION vs POST_MI.", S, None, "differential_only"),
    ("Rate: 72. Rhythm: sinus. Q waves: none. ST: normal.", S, None, "fields_no_verdict"),
    ("Impression: sinus rhythm, old inferior MI, no acute changes.\nFinal answer: POST_MI", S, PMI, "impression_and_final"),
    ("Impression: anterior STEMI — activate cath lab.", S, MI, "stemi_action"),
    ("The tracing is consistent with a healed infarct.", S, PMI, "healed_infarct"),
    ("The tracing is consistent with an arrhythmia, specifically sinus arrhythmia.", S, AH, "arrhythmia_specific"),
]
# fmt: on


def main() -> None:
    """Write the pool as JSONL, ids d000, d001, ..."""
    out = Path(__file__).with_name("parser_pool_d.jsonl")
    with out.open("w", encoding="utf-8") as handle:
        for index, (text, finish, expected, trap) in enumerate(ANSWERS):
            row = {
                "id": f"d{index:03d}",
                "text": text,
                "finish_reason": finish,
                "expected": expected,
                "trap": trap,
            }
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
