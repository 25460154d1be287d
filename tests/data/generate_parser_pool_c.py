"""Pool C: ECG answers written as clinical reports, a third tuning set for the parser.

Run: `python tests/data/generate_parser_pool_c.py` (writes `parser_pool_c.jsonl` next to
this file; deterministic: seeded).

Built by another method than the other two corpora. `parser_corpus.jsonl` was written
answer by answer; `generate_parser_answers.py` assembles a chain-of-thought answer from
interchangeable parts (preamble x steps x verdict block). Here each answer is one whole
*report template* modelled on how clinical reads are written (a header block, "Findings",
"Interpretation:", "Impression:", "Final read:", a numbered problem list, a table, a
multiple-choice answer, an over-read of a machine statement, a recommendation section
that names another label), and only its slots vary: the label and how it is written, the
findings, a hedge, a negated differential, and whether the answer is cut off.

Every template says what a careful reader takes from it (`expected`): a label only where
the report gives a verdict, None where it declines, conditions, lists candidates without
choosing, or is cut off before its verdict. The parser may be tuned on this set; the
held-out set (`parser_heldout.jsonl`) is untouched by it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
LABELS = ("MYOCARDIAL_INFARCTION", "POST_MI", "ABNORMAL_HEARTBEAT", "NORMAL")

# How a label is written in a report: the name in several styles, and plain clinical words.
WRITTEN = {
    "MYOCARDIAL_INFARCTION": [
        "MYOCARDIAL_INFARCTION",
        "Myocardial infarction",
        "acute ST-elevation MI",
        "acute inferior STEMI",
        "STEMI",
        "acute MI",
    ],
    "POST_MI": ["POST_MI", "Post MI", "old MI", "prior inferior infarct", "healed MI"],
    "ABNORMAL_HEARTBEAT": [
        "ABNORMAL_HEARTBEAT",
        "Abnormal heartbeat",
        "atrial fibrillation with rapid ventricular response",
        "frequent PVCs",
        "atrial flutter",
    ],
    "NORMAL": ["NORMAL", "Normal", "normal ECG", "within normal limits"],
}
MARKUP = ["{}", "**{}**", "`{}`", "__{}__", "*{}*"]

FINDINGS = {
    "MYOCARDIAL_INFARCTION": [
        "ST elevation 3 mm in II, III, aVF with reciprocal depression in aVL",
        "hyperacute T waves V2-V4; ST elevation in V1-V3",
    ],
    "POST_MI": [
        "Q waves 0.04 s in III and aVF; ST isoelectric",
        "loss of R waves V1-V3 with QS complexes; no acute ST change",
    ],
    "ABNORMAL_HEARTBEAT": [
        "irregularly irregular RR intervals, no discernible P waves",
        "sawtooth flutter waves at 300/min, 4:1 conduction",
    ],
    "NORMAL": [
        "sinus rhythm 72/min, axis +45, intervals normal",
        "regular sinus rhythm, normal axis, no ST or T abnormality",
    ],
}
# Negated statements about a label that is not the verdict (the report's "pertinent negatives").
NEGATIVES = {
    "MYOCARDIAL_INFARCTION": ["No acute ST elevation to suggest STEMI.", "Acute MI: not seen."],
    "POST_MI": ["No pathological Q waves; no old MI.", "No evidence of prior infarct."],
    "ABNORMAL_HEARTBEAT": ["No arrhythmia.", "Rhythm regular, no ectopy."],
    "NORMAL": ["This is not a normal ECG.", "Not within normal limits."],
}


def _write(rng: random.Random, label: str) -> str:
    return rng.choice(MARKUP).format(rng.choice(WRITTEN[label]))


def _other(rng: random.Random, label: str) -> str:
    return rng.choice([other for other in LABELS if other != label])


def _header(rng: random.Random) -> str:
    return rng.choice(
        [
            "12-LEAD ECG REPORT\nVentricular rate: 78 bpm | PR: 160 ms | QRS: 92 ms"
            " | QT/QTc: 380/420 ms\n\n",
            "Patient: [redacted]   Study: resting 12-lead ECG\n\n",
            "ECG interpretation (systematic):\n\n",
            "",
        ]
    )


Template = Callable[[random.Random, str], tuple[str, str | None]]


def impression(rng: random.Random, truth: str) -> tuple[str, str | None]:
    other = _other(rng, truth)
    heading = rng.choice(["IMPRESSION:", "Impression:", "**Impression**:", "### Impression\n"])
    return (
        f"{_header(rng)}Findings: {rng.choice(FINDINGS[truth])}. {rng.choice(NEGATIVES[other])}\n\n"
        f"{heading} {_write(rng, truth)}.",
        truth,
    )


def interpretation(rng: random.Random, truth: str) -> tuple[str, str | None]:
    heading = rng.choice(["Interpretation:", "INTERPRETATION:", "**Interpretation:**"])
    return (
        f"{_header(rng)}Rhythm and rate: {rng.choice(FINDINGS[truth])}.\n\n"
        f"{heading} {_write(rng, truth)}",
        truth,
    )


def final_read(rng: random.Random, truth: str) -> tuple[str, str | None]:
    cue = rng.choice(["Final read:", "FINAL READ:", "Final read -", "Read:"])
    return (
        f"{_header(rng)}{rng.choice(FINDINGS[truth])}.\n\n{cue} {_write(rng, truth)}.",
        truth,
    )


def over_read(rng: random.Random, truth: str) -> tuple[str, str | None]:
    machine = _other(rng, truth)
    return (
        f"Computer statement: {_write(rng, machine)} (unconfirmed).\n\n"
        f"Over-read: I disagree with the computer; {rng.choice(FINDINGS[truth])}.\n"
        f"Final classification: {_write(rng, truth)}",
        truth,
    )


def problem_list(rng: random.Random, truth: str) -> tuple[str, str | None]:
    other = _other(rng, truth)
    return (
        f"{_header(rng)}1. Rate/rhythm: {FINDINGS[truth][0]}.\n"
        f"2. Pertinent negatives: {rng.choice(NEGATIVES[other])}\n"
        f"3. Diagnosis: {_write(rng, truth)}\n",
        truth,
    )


def table(rng: random.Random, truth: str) -> tuple[str, str | None]:
    mark = rng.choice([("✔", ""), ("X", ""), ("yes", "no")])
    rows = "".join(f"| {label} | {mark[0] if label == truth else mark[1]} |\n" for label in LABELS)
    return (
        f"{rng.choice(FINDINGS[truth])}.\n\n| Category | Selected |\n|---|---|\n{rows}\n"
        f"Conclusion: {_write(rng, truth)}",
        truth,
    )


def multiple_choice(rng: random.Random, truth: str) -> tuple[str, str | None]:
    letters = dict(zip(LABELS, "ABCD", strict=True))
    options = "\n".join(f"{letters[label]}) {label}" for label in LABELS)
    return (
        f"Options:\n{options}\n\n{rng.choice(FINDINGS[truth])}.\n\n"
        f"Answer: {letters[truth]}) {_write(rng, truth)}",
        truth,
    )


def recommendation_after(rng: random.Random, truth: str) -> tuple[str, str | None]:
    other = _other(rng, truth)
    return (
        f"{_header(rng)}Impression: {_write(rng, truth)}.\n\n"
        f"Recommendation: repeat tracing in 24 h to exclude evolving {_write(rng, other)}; "
        "clinical correlation advised.",
        truth,
    )


def hedged(rng: random.Random, truth: str) -> tuple[str, str | None]:
    hedge = rng.choice(["Probable", "Likely", "Findings most consistent with", "Favour"])
    return (
        f"{rng.choice(FINDINGS[truth])}.\n\nImpression: {hedge} {_write(rng, truth)}.",
        truth,
    )


def candidates(rng: random.Random, truth: str) -> tuple[str, str | None]:
    other = _other(rng, truth)
    closing = rng.choice(
        [
            f"Impression: {_write(rng, truth)} versus {_write(rng, other)}; "
            "comparison with a prior tracing needed.",
            f"Differential: {_write(rng, truth)}, {_write(rng, other)}. "
            "A definite classification is not possible from this image.",
        ]
    )
    return f"{rng.choice(FINDINGS[truth])}.\n\n{closing}", None


def conditional(rng: random.Random, truth: str) -> tuple[str, str | None]:
    other = _other(rng, truth)
    return (
        f"{rng.choice(FINDINGS[truth])}.\n\n"
        f"Interpretation: {_write(rng, truth)} if the changes are new; "
        f"{_write(rng, other)} if unchanged from a prior tracing.",
        None,
    )


def refusal(rng: random.Random, truth: str) -> tuple[str, str | None]:
    text = rng.choice(
        [
            "I'm not able to provide a diagnostic interpretation of this ECG. "
            "Please have it over-read by a qualified physician.",
            f"The image quality is too poor to assess: {NEGATIVES[truth][0]} cannot be "
            "confirmed or refuted. Unable to classify.",
            "This tracing is unreadable (lead reversal and baseline wander); "
            "no interpretation can be given.",
        ]
    )
    return text, None


def negated_only(rng: random.Random, truth: str) -> tuple[str, str | None]:
    other = _other(rng, truth)
    return (
        f"{rng.choice(FINDINGS[truth])}.\n\nFinal read: no {_write(rng, other)}; "
        "remaining assessment deferred to the cardiologist.",
        None,
    )


def cut_off(rng: random.Random, truth: str) -> tuple[str, str | None]:
    text, _ = impression(rng, truth)
    cut = text.rfind("mpression")  # inside the heading: the verdict never arrived
    return text[: max(1, cut)], None


def not_a_label(rng: random.Random, truth: str) -> tuple[str, str | None]:
    # "Abnormal ECG" / "borderline ECG" name no category of this task.
    words = rng.choice(["Abnormal ECG", "Borderline ECG", "Otherwise normal ECG", "Nonspecific"])
    return (
        f"{rng.choice(FINDINGS[truth])}.\n\nConclusion: {words}. Clinical correlation recommended.",
        None,
    )


def negated_then_verdict(rng: random.Random, truth: str) -> tuple[str, str | None]:
    other = _other(rng, truth)
    return (
        f"{rng.choice(FINDINGS[truth])}.\n\nFinal read: not {_write(rng, other)} - "
        f"{_write(rng, truth)}.",
        truth,
    )


def signed(rng: random.Random, truth: str) -> tuple[str, str | None]:
    other = _other(rng, truth)
    return (
        f"Impression: {_write(rng, truth)}.\n\n-- Electronically signed (cardiology over-read)."
        f"\nNote: {_write(rng, other)} cannot be excluded on a single tracing.",
        truth,
    )


def cut_mid_label(rng: random.Random, truth: str) -> tuple[str, str | None]:
    name = truth.replace("_", " ")
    return f"{rng.choice(FINDINGS[truth])}.\n\nImpression: {name[: rng.randint(2, 4)]}", None


def cut_after_verdict(rng: random.Random, truth: str) -> tuple[str, str | None]:
    return (
        f"{rng.choice(FINDINGS[truth])}.\n\nImpression: {_write(rng, truth)}.\n\n"
        "Comment: compared with the previous tracing, the rate is",
        truth,
    )


def step_conclusion(rng: random.Random, truth: str) -> tuple[str, str | None]:
    other = _other(rng, truth)
    steps = "".join(
        f"Step {n}: {finding}.\n" for n, finding in enumerate(FINDINGS[truth] * 2, start=1)
    )
    return (
        f"{steps}Step 5: {rng.choice(NEGATIVES[other])}\nStep 6 - Conclusion: {_write(rng, truth)}",
        truth,
    )


def summary_row(rng: random.Random, truth: str) -> tuple[str, str | None]:
    return (
        f"| Item | Value |\n|---|---|\n| Rate | 76 |\n| Rhythm | {FINDINGS[truth][0]} |\n"
        f"| Final category | {_write(rng, truth)} |\n",
        truth,
    )


def arrow(rng: random.Random, truth: str) -> tuple[str, str | None]:
    return (
        f"- {rng.choice(FINDINGS[truth])}\n- Verdict → {_write(rng, truth)}",
        truth,
    )


def cannot_rule_out(rng: random.Random, truth: str) -> tuple[str, str | None]:
    return (
        f"{rng.choice(FINDINGS[truth])}.\n\nCannot rule out {_write(rng, truth)}; "
        "no definite diagnosis can be made from this strip.",
        None,
    )


def declines_with_hint(rng: random.Random, truth: str) -> tuple[str, str | None]:
    return (
        "I can't give a diagnosis, but the features could suggest "
        f"{_write(rng, truth)}. Please consult a physician.",
        None,
    )


def ruled_out_then(rng: random.Random, truth: str) -> tuple[str, str | None]:
    other = _other(rng, truth)
    return (
        f"{rng.choice(FINDINGS[truth])}.\n\nAssessment: {_write(rng, other)} ruled out; "
        f"{_write(rng, truth)}.",
        truth,
    )


def question_echo(rng: random.Random, truth: str) -> tuple[str, str | None]:
    other = _other(rng, truth)
    return (
        f"Is this {_write(rng, other)}? No. {rng.choice(FINDINGS[truth])}, "
        f"so my classification is {_write(rng, truth)}.",
        truth,
    )


TEMPLATES: list[tuple[Template, int]] = [
    (impression, 10),
    (interpretation, 8),
    (final_read, 8),
    (over_read, 6),
    (problem_list, 6),
    (table, 5),
    (multiple_choice, 5),
    (recommendation_after, 6),
    (hedged, 6),
    (candidates, 5),
    (conditional, 4),
    (refusal, 5),
    (negated_only, 4),
    (cut_off, 4),
    (not_a_label, 4),
    (negated_then_verdict, 4),
    (signed, 4),
    (cut_mid_label, 3),
    (cut_after_verdict, 3),
    (step_conclusion, 4),
    (summary_row, 4),
    (arrow, 3),
    (cannot_rule_out, 3),
    (declines_with_hint, 3),
    (ruled_out_then, 4),
    (question_echo, 3),
]


def generate(seed: int = 3, count: int = 500, prefix: str = "c") -> list[dict[str, object]]:
    """`count` report-style answers drawn with `seed`."""
    rng = random.Random(seed)
    answers: list[dict[str, object]] = []
    for number in range(count):
        template = rng.choices([t for t, _ in TEMPLATES], weights=[w for _, w in TEMPLATES])[0]
        truth = rng.choice(LABELS)
        text, expected = template(rng, truth)
        # Cut mid-word with no finish reason: the back-end did not say why it stopped.
        finish_reason = {cut_off: "length", cut_mid_label: None, cut_after_verdict: None}.get(
            template, "stop"
        )
        answers.append(
            {
                "id": f"{prefix}{number:03d}",
                "text": text,
                "finish_reason": finish_reason,
                "expected": expected,
                "trap": template.__name__,
            }
        )
    return answers


FILE = "parser_pool_c.jsonl"


def main() -> int:
    """Write `parser_pool_c.jsonl`."""
    answers = generate()
    with (HERE / FILE).open("w", encoding="utf-8") as handle:
        for answer in answers:
            handle.write(json.dumps(answer, ensure_ascii=False) + "\n")
    print(f"{FILE}: {len(answers)} answers")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
