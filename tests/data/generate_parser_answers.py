"""Combinatorial generator of answers to the ECG chain-of-thought prompt, with their verdicts.

Run: `python tests/data/generate_parser_answers.py` (writes `parser_tuning.jsonl` and
`parser_heldout.jsonl` next to this file; deterministic: seeded).

This is the parser's second corpus, built by a different method than
`parser_corpus.jsonl` (whose 133 answers were written one by one, each around a trap).
Here an answer is assembled from independent parts, each drawn at random:

```
preamble  x  section layout (STEP headings in 4 markdown styles, or none)
          x  findings of the true label, with negated and hedged findings about others
          x  verdict block: phrasing x label spelling (name, markdown, synonym) x position
             (end, first, after a restated option list or a checklist or a table)
          x  answer kind: verdict, hedged verdict, refusal, conditional, undecided,
             cut off before / inside / after the verdict
```

Every answer carries the label a careful reader takes from it (`expected`), or None when
it has no verdict (refusal, conditional, undecided, cut off before or inside the verdict):
such an answer must come out unparseable, never as a label taken from its findings.

Two sets come out of it:

- `parser_tuning.jsonl` (seed 1, phrase pool A only): the set the parser may be tuned on.
- `parser_heldout.jsonl` (seed 2, pools A and B): pool B holds phrasings, layouts and
  spellings that are NOT in pool A and were written before the parser was changed; about
  half of each held-out answer's parts come from pool B. The held-out set is scored once
  per parser change, never read case by case while tuning.

Honesty note: both pools were written by the same person who then changed the parser, who
knew the failure kinds listed in the issue. The held-out figure therefore measures
generalisation to new phrasings of known failure kinds, not to unknown kinds; it is
weaker evidence than answers written by someone else or sampled from a real model.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LABELS = ("MYOCARDIAL_INFARCTION", "POST_MI", "ABNORMAL_HEARTBEAT", "NORMAL")

# --- parts: (text, pool); pool "A" is in both sets, "B" only in the held-out set ----------

Pool = list[tuple[str, str]]

PREAMBLES: Pool = [
    ("", "A"),
    ("Okay, let's analyze this ECG systematically.\n\n", "A"),
    ("Here's a systematic interpretation of the provided 12-lead ECG:\n\n", "A"),
    ("I will analyze the ECG step by step, following the standard clinical approach.\n\n", "A"),
    ("Sure. Below is my step-by-step reading of the tracing.\n\n", "B"),
    ("Let me work through this 12-lead ECG carefully before committing to a category.\n\n", "B"),
    ("**Systematic ECG Interpretation**\n\n", "B"),
]

STEP_NAMES = (
    "RATE AND RHYTHM",
    "P WAVES",
    "PR INTERVAL",
    "QRS COMPLEX",
    "ST SEGMENT (CRITICAL FOR MI)",
    "T WAVES",
)
# How a section heading is written: {n} step number, {name} upper-case name, {title} title case.
HEADINGS: Pool = [
    ("**STEP {n} - {name}:**\n", "A"),
    ("### Step {n}: {title}\n", "A"),
    ("{n}. **{title}**\n", "A"),
    ("STEP {n} - {name}:\n", "A"),
    ("## {n}) {title}\n\n", "B"),
    ("__Step {n} — {title}__\n", "B"),
    ("> **{title}**\n", "B"),
]
BULLETS: Pool = [("- ", "A"), ("*   ", "A"), ("• ", "B"), ("  * ", "B")]

# Findings by step, per true label. Each step gets one or two; `{b}` is the bullet.
FINDINGS: dict[str, list[list[tuple[str, str]]]] = {
    "MYOCARDIAL_INFARCTION": [
        [
            ("Heart rate about 95 bpm, regular sinus rhythm.", "A"),
            ("Rate ~88/min; rhythm regular, P before every QRS.", "B"),
        ],
        [
            ("P waves upright in I, II and aVF, normal morphology.", "A"),
            ("Normal P wave axis and shape.", "B"),
        ],
        [("PR interval about 160 ms (normal).", "A"), ("PR 0.18 s, within range.", "B")],
        [
            ("QRS narrow (<120 ms). No pathological Q waves yet.", "A"),
            ("Narrow QRS; small q waves only, not pathological.", "B"),
        ],
        [
            (
                "ST elevation of 2-3 mm in II, III and aVF, reciprocal depression in I and aVL.",
                "A",
            ),
            ("Convex ST elevation in V1-V4, with reciprocal ST depression inferiorly.", "B"),
        ],
        [
            ("Hyperacute, broad-based T waves in the same leads.", "A"),
            ("Tall peaked T waves in V2-V4, consistent with an acute process.", "B"),
        ],
    ],
    "POST_MI": [
        [
            ("Heart rate about 70 bpm, regular sinus rhythm.", "A"),
            ("Rate 64/min, sinus rhythm, regular.", "B"),
        ],
        [("P waves upright in I, II and aVF.", "A"), ("P waves present and normal.", "B")],
        [("PR interval about 160 ms (normal).", "A"), ("PR interval normal at ~170 ms.", "B")],
        [
            ("Pathological Q waves in II, III and aVF (>40 ms wide).", "A"),
            ("Deep, wide Q waves in V1-V4 with poor R wave progression.", "B"),
        ],
        [
            ("No acute ST elevation; ST segments are isoelectric.", "A"),
            ("ST segments at baseline, no acute injury current.", "B"),
        ],
        [
            ("T wave inversion in III and aVF, which may reflect an evolved infarct.", "A"),
            ("Shallow T inversion in the anterior leads.", "B"),
        ],
    ],
    "ABNORMAL_HEARTBEAT": [
        [
            ("Rate 110-130 bpm, irregularly irregular rhythm.", "A"),
            ("Ventricular rate ~140/min; R-R intervals vary without pattern.", "B"),
        ],
        [
            ("No discernible P waves; fibrillatory baseline.", "A"),
            ("Sawtooth flutter waves in II, III and aVF.", "B"),
        ],
        [("PR interval cannot be measured.", "A"), ("PR not measurable.", "B")],
        [
            ("QRS narrow, with occasional wide premature beats.", "A"),
            ("Frequent premature ventricular complexes in a bigeminal pattern.", "B"),
        ],
        [("No ST elevation.", "A"), ("Non-specific ST changes only, no elevation.", "B")],
        [("T waves upright, normal.", "A"), ("T waves unremarkable.", "B")],
    ],
    "NORMAL": [
        [
            ("Heart rate about 72 bpm, regular sinus rhythm.", "A"),
            ("Rate 78/min, regular, P before every QRS.", "B"),
        ],
        [
            ("P waves upright in I, II and aVF, normal morphology.", "A"),
            ("P waves normal in size and axis.", "B"),
        ],
        [("PR interval about 160 ms (normal).", "A"), ("PR 150 ms.", "B")],
        [
            ("QRS narrow (~90 ms), no pathological Q waves.", "A"),
            ("Narrow QRS, normal axis, no Q waves.", "B"),
        ],
        [("No ST elevation or depression.", "A"), ("ST segments isoelectric throughout.", "B")],
        [("T waves upright in I, II, V3-V6.", "A"), ("Normal T wave morphology.", "B")],
    ],
}

# Negated or hedged findings that name another label (the traps). {other}-independent:
# each names the label it is about, and is only used when that label is not the truth.
NEGATED: dict[str, Pool] = {
    "MYOCARDIAL_INFARCTION": [
        ("No ST elevation, so an acute STEMI is unlikely.", "A"),
        ("There is no evidence of acute myocardial infarction.", "A"),
        ("No hyperacute T waves to suggest an acute MI.", "B"),
        ("ST elevation: none (rules out MYOCARDIAL_INFARCTION).", "B"),
        ("- Acute MI: ❌ not present", "B"),
    ],
    "POST_MI": [
        ("No pathological Q waves, so no evidence of an old MI.", "A"),
        ("Q waves in II, III, aVF would suggest inferior MI, but none are seen.", "A"),
        ("No Q waves to suggest a prior infarct.", "B"),
        ("Prior MI: absent.", "B"),
        ("There are no features of a healed (old) myocardial infarction.", "B"),
    ],
    "ABNORMAL_HEARTBEAT": [
        ("The rhythm is not irregularly irregular, so atrial fibrillation is unlikely.", "A"),
        ("No ectopic beats or arrhythmia are seen.", "A"),
        ("No arrhythmia: the R-R intervals are constant.", "B"),
        ("Atrial fibrillation — not present.", "B"),
        ("Without P wave abnormalities there is no sign of an arrhythmia.", "B"),
    ],
    "NORMAL": [
        ("This ECG is not NORMAL.", "A"),
        ("The tracing is clearly not a normal ECG.", "A"),
        ("It cannot be called normal.", "B"),
        ("NORMAL is excluded by the findings above.", "B"),
    ],
}

# How the verdict label is written. {L} is replaced by the canonical name.
CANONICAL_STYLES: Pool = [
    ("{L}", "A"),
    ("**{L}**", "A"),
    ("`{L}`", "A"),
    ("*{L}*", "B"),
    ("***{L}***", "B"),
    ('"{L}"', "B"),
]
SPELLINGS: dict[str, Pool] = {
    "MYOCARDIAL_INFARCTION": [
        ("MYOCARDIAL_INFARCTION", "A"),
        ("Myocardial Infarction", "A"),
        ("acute inferior STEMI", "A"),
        ("acute myocardial infarction", "A"),
        ("MYOCARDIAL INFARCTION", "B"),
        ("acute anterior ST-elevation myocardial infarction", "B"),
        ("evolving inferior MI", "B"),
        ("STEMI (acute MI)", "B"),
    ],
    "POST_MI": [
        ("POST_MI", "A"),
        ("Post-MI", "A"),
        ("old inferior MI", "A"),
        ("prior myocardial infarction", "A"),
        ("POST MI", "B"),
        ("prior (healed) anterior myocardial infarction", "B"),
        ("old (remote) inferior infarct", "B"),
        ("history of inferior MI", "B"),
        ("previous infarction", "B"),
    ],
    "ABNORMAL_HEARTBEAT": [
        ("ABNORMAL_HEARTBEAT", "A"),
        ("Abnormal Heartbeat", "A"),
        ("atrial fibrillation", "A"),
        ("arrhythmia", "A"),
        ("ABNORMAL HEARTBEAT", "B"),
        ("atrial flutter with variable block", "B"),
        ("sinus rhythm with frequent PVCs", "B"),
        ("abnormal heart beat", "B"),
    ],
    "NORMAL": [
        ("NORMAL", "A"),
        ("Normal", "A"),
        ("normal ECG", "A"),
        ("within normal limits", "B"),
        ("a normal 12-lead ECG", "B"),
    ],
}

# Verdict sentences; {V} is the written label.
VERDICTS: Pool = [
    ("**FINAL CLASSIFICATION:** {V}", "A"),
    ("**FINAL CLASSIFICATION:**\n\n{V}", "A"),
    ("## Final Classification\n{V}", "A"),
    ("FINAL CLASSIFICATION: {V}", "A"),
    ("Based on the systematic analysis above, I would classify this ECG as {V}.", "A"),
    ("Therefore, the final classification is {V}.", "A"),
    ("**Classification:** {V}", "A"),
    ("The ECG is best classified as {V}.", "A"),
    ("**Answer: {V}**", "B"),
    ("Final answer → {V}", "B"),
    ("My verdict: {V}.", "B"),
    ("| **Final Classification** | {V} |\n|---|---|", "B"),
    ("**Overall impression:** {V}.", "B"),
    ("**Diagnosis:** {V}", "B"),
    ("Putting it all together, this ECG falls into the category {V}.", "B"),
]
HEDGES: Pool = [
    ("**FINAL CLASSIFICATION:** {V} (most likely)", "A"),
    ("FINAL CLASSIFICATION: probably {V}", "A"),
    ("Final classification: most consistent with {V}, although the image quality is limited.", "B"),
    ("**Classification:** likely {V}", "B"),
]
# Said after a hedged verdict about another label, which must not take the verdict's place.
WOULD_APPLY: Pool = [
    ("{O} would apply only if there were acute ST elevation.", "A"),
    ("{O} would be the answer if the rhythm were irregular.", "A"),
    ("If new ST elevation appeared, {O} would be more appropriate.", "B"),
    ("A repeat tracing showing Q waves would make {O} the better fit.", "B"),
]
RATIONALES: Pool = [
    ("\n\nRationale: the findings above fit this category best.", "A"),
    ("\n\n**Reasoning:** {F}", "A"),
    ("\n\nThis is supported by the findings in steps 4 to 6.", "B"),
    ("\n\n_Key finding:_ {F}", "B"),
]

REFUSALS: Pool = [
    ("I cannot confidently assign a single classification to this ECG.", "A"),
    (
        "I'm sorry, but I can't provide a diagnosis from this image. "
        "Please consult a qualified physician.",
        "A",
    ),
    ("Given the image quality, I am unable to determine a definitive classification.", "B"),
    (
        "I'd rather not commit to one category without the clinical context and a prior tracing.",
        "B",
    ),
    ("A definitive classification is not possible from this image alone.", "B"),
]
CONDITIONALS: Pool = [
    (
        "If the Q waves in III and aVF are pathological, this would be {L1}; "
        "if they are a normal variant, {L2}.",
        "A",
    ),
    ("**FINAL CLASSIFICATION:** {L1} if the ST elevation is new, otherwise {L2}.", "A"),
    ("Should the ST changes be acute, {L1} would be the answer; otherwise {L2}.", "B"),
    (
        "The classification depends on clinical context: {L1} if symptoms are ongoing, "
        "{L2} if not.",
        "B",
    ),
]
UNDECIDED: Pool = [
    ("It could be either {L1} or {L2}; a comparison with a previous ECG is needed.", "A"),
    ("I am torn between {L1} and {L2} and cannot choose between them.", "B"),
]

OPTION_LIST = (
    "Based on the systematic analysis above, classify this ECG as ONE of:\n"
    "- **MYOCARDIAL_INFARCTION**: If you see ST elevation, hyperacute T waves, or acute "
    "ischemic changes\n"
    "- **POST_MI**: If you see pathological Q waves with no acute ST elevation (indicates "
    "old/healed MI)\n"
    "- **ABNORMAL_HEARTBEAT**: If the rhythm is irregular, there are ectopic beats, or "
    "arrhythmia is present\n"
    "- **NORMAL**: ONLY if rate is normal, rhythm is regular sinus, no Q waves, no ST "
    "changes, normal T waves\n\n"
)


@dataclass
class Draw:
    """Chooses parts from the pools a set allows."""

    rng: random.Random
    pools: tuple[str, ...]
    b_share: float  # chance of drawing from pool B when both are allowed

    def __call__(self, options: Pool) -> str:
        allowed = [text for text, pool in options if pool in self.pools]
        if "B" in self.pools:
            only_b = [text for text, pool in options if pool == "B"]
            if only_b and self.rng.random() < self.b_share:
                return self.rng.choice(only_b)
        return self.rng.choice(allowed)


def _analysis(draw: Draw, truth: str) -> str:
    rng = draw.rng
    heading = draw(HEADINGS) if rng.random() < 0.85 else ""
    bullet = draw(BULLETS)
    others = [label for label in LABELS if label != truth]
    traps = [draw(NEGATED[label]) for label in rng.sample(others, k=rng.randint(0, 2))]
    parts = []
    for number, name in enumerate(STEP_NAMES):
        lines = [draw(FINDINGS[truth][number])]
        if traps and rng.random() < 0.4:
            lines.append(traps.pop())
        head = heading.format(n=number + 1, name=name, title=name.title()) if heading else ""
        parts.append(head + "".join(f"{bullet}{line}\n" for line in lines))
    parts.extend(f"{bullet}{trap}\n" for trap in traps)  # those not yet placed
    return "\n".join(parts)


def _written(draw: Draw, label: str) -> str:
    spelling = draw(SPELLINGS[label])
    return draw(CANONICAL_STYLES).replace("{L}", spelling)


def _finding(draw: Draw, truth: str) -> str:
    return draw(FINDINGS[truth][draw.rng.choice((3, 4))])


def _verdict_block(draw: Draw, truth: str, layout: str) -> tuple[str, str, str]:
    """`(before, label, after)`: the verdict block, split around the written label."""
    rng = draw.rng
    written = _written(draw, truth)
    before, after = draw(VERDICTS).split("{V}")
    if layout == "options":
        before = OPTION_LIST + before
    elif layout == "checklist":
        yes, no = ("✔", "✘") if "B" in draw.pools and rng.random() < 0.5 else ("✅", "❌")
        lines = "".join(f"- {label} {yes if label == truth else no}\n" for label in LABELS)
        before = "Checking each category:\n" + lines + "\n" + before
    elif layout == "not-normal" and truth != "NORMAL":
        before = "The ECG is not NORMAL. " + _finding(draw, truth) + "\n\n" + before
    elif layout == "table":
        before = (
            "| Finding | Present |\n|---|---|\n| ST elevation | "
            + ("yes" if truth == "MYOCARDIAL_INFARCTION" else "no")
            + " |\n| Pathological Q waves | "
            + ("yes" if truth == "POST_MI" else "no")
            + " |\n\n"
            + before
        )
    if rng.random() < 0.5:
        after += draw(RATIONALES).replace("{F}", _finding(draw, truth))
    return before, written, after


def _cut(text: str, rng: random.Random, low: int, high: int) -> str:
    """`text` cut at a random point in `[low, high)`, never inside the first 40 characters."""
    return text[: rng.randrange(max(40, low), max(41, high))]


def generate(seed: int, pools: tuple[str, ...], count: int, prefix: str) -> list[dict[str, object]]:
    """`count` answers drawn with `seed` from `pools`."""
    rng = random.Random(seed)
    draw = Draw(rng, pools, b_share=0.5)
    kinds = [
        ("verdict", 40),
        ("hedged-would-apply", 6),
        ("refusal", 8),
        ("conditional", 7),
        ("undecided", 4),
        ("cut-before-verdict", 12),
        ("cut-inside-verdict", 8),
        ("cut-after-verdict", 6),
        ("verdict-first", 9),
    ]
    layouts = ["end", "end", "options", "checklist", "not-normal", "table"]
    answers: list[dict[str, object]] = []
    for number in range(count):
        truth = rng.choice(LABELS)
        kind = rng.choices([k for k, _ in kinds], weights=[w for _, w in kinds])[0]
        layout = rng.choice(layouts)
        preamble = draw(PREAMBLES)
        analysis = _analysis(draw, truth)
        finish_reason: str | None = "stop"
        expected: str | None = truth
        status = "parsed"
        if kind == "verdict":
            text = preamble + analysis + "\n" + "".join(_verdict_block(draw, truth, layout))
        elif kind == "verdict-first":
            block = "".join(_verdict_block(draw, truth, "end"))
            text = preamble + block + "\n\n" + analysis
        elif kind == "hedged-would-apply":
            other = rng.choice([label for label in LABELS if label != truth])
            hedge = draw(HEDGES).replace("{V}", _written(draw, truth))
            text = (
                preamble
                + analysis
                + "\n"
                + hedge
                + ". "
                + draw(WOULD_APPLY).replace("{O}", _written(draw, other))
            )
        elif kind in ("refusal", "conditional", "undecided"):
            expected = None
            status = "refusal" if kind == "refusal" else "unparseable"
            first, second = rng.sample(LABELS, k=2)
            pool = {"refusal": REFUSALS, "conditional": CONDITIONALS, "undecided": UNDECIDED}
            closing = draw(pool[kind])
            closing = closing.replace("{L1}", _written(draw, first))
            closing = closing.replace("{L2}", _written(draw, second))
            if kind == "refusal" and rng.random() < 0.3:
                text = closing  # a refusal instead of any analysis
            else:
                text = preamble + analysis + "\n" + closing
        else:  # cut off
            # A checklist's tick is a verdict of its own: cut only plain layouts.
            before, written, after = _verdict_block(
                draw, truth, "end" if layout == "checklist" else layout
            )
            head = preamble + analysis + "\n"
            verdict_at = len(head) + len(before)
            end = verdict_at + len(written)
            if len(after) < 25:
                after += "\n\nRationale: " + _finding(draw, truth)
            whole = head + before + written + after
            finish_reason = "length" if rng.random() < 0.7 else None
            if kind == "cut-before-verdict":
                text = _cut(whole, rng, len(preamble) + 40, len(head) - 1)
                expected, status = None, "truncated"
            elif kind == "cut-inside-verdict":
                # From the verdict block's start to two characters into the label.
                text = _cut(whole, rng, len(head) + 1, verdict_at + 3)
                expected, status = None, "truncated"
            else:
                text = _cut(whole, rng, end + 20, len(whole))
            if finish_reason is None and expected is None:
                status = "unparseable"
        answers.append(
            {
                "id": f"{prefix}{number:03d}",
                "text": text,
                "finish_reason": finish_reason,
                "expected": expected,
                "expected_status": status,
                "trap": f"{kind}/{layout}",
            }
        )
    return answers


SETS: dict[str, dict[str, Any]] = {
    "parser_tuning.jsonl": {"seed": 1, "pools": ("A",), "count": 320, "prefix": "t"},
    "parser_heldout.jsonl": {"seed": 2, "pools": ("A", "B"), "count": 400, "prefix": "h"},
}
"""The two sets: file name -> `generate` arguments."""


def main() -> int:
    """Write the tuning and held-out sets."""
    for name, arguments in SETS.items():
        answers = generate(**arguments)
        with (HERE / name).open("w", encoding="utf-8") as handle:
            for answer in answers:
                handle.write(json.dumps(answer, ensure_ascii=False) + "\n")
        print(f"{name}: {len(answers)} answers")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
