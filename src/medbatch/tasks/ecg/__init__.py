"""The ECG task of the original notebook: four classes of 12-lead ECG printouts.

Labels and the chain-of-thought prompt (`cot-v1`) are the notebook's, word for word, so
results are comparable with it. `direct-v1` is a short prompt for constrained decoding.
The folder map follows the Kaggle set `evilspirit05/ecg-analysis`, a mirror of Khan &
Hussain's ECG images dataset of cardiac patients (Mendeley Data, CC BY 4.0).

The package also holds the synthetic ECG generator: `signals` (the physiology, numpy only)
and `paper` (the drawing, with PIL), loaded only when used. Like every task it imports no
dataset, runner, result or CLI module.
"""

from __future__ import annotations

from medbatch.labels import Label, LabelSet
from medbatch.parsing.answer import FinalAnswerParser
from medbatch.prompts.chat import ChatPromptTemplate
from medbatch.records import GenerationParams
from medbatch.tasks.base import Task

__all__ = [
    "ECG_COT_PROMPT",
    "ECG_LABELS",
    "ECG_SUBJECT_NOUNS",
    "ECG_SYSTEM_PROMPT",
    "ECG_TASK",
    "make_ecg_task",
]

ECG_LABELS = LabelSet(
    labels=(
        Label(
            name="MYOCARDIAL_INFARCTION",
            description="If you see ST elevation, hyperacute T waves, or acute ischemic changes",
            synonyms=(
                "myocardial infarction",
                "acute myocardial infarction",
                "acute MI",
                "STEMI",
                "ST elevation myocardial infarction",
                "ST-elevation MI",
                "acute infarction",
                "acute ST elevation MI",
                "anterior STEMI",
                "inferior STEMI",
                "lateral STEMI",
                "ST elevation MI",
                "NSTEMI",
                "acute infarct",
                "evolving MI",
                "heart attack",
            ),
        ),
        Label(
            name="POST_MI",
            description=(
                "If you see pathological Q waves with no acute ST elevation "
                "(indicates old/healed MI)"
            ),
            synonyms=(
                "post myocardial infarction",
                "old MI",
                "prior MI",
                "healed MI",
                "previous MI",
                "remote MI",
                "history of MI",
                "old myocardial infarction",
                "prior myocardial infarction",
                "healed myocardial infarction",
                "previous myocardial infarction",
                "old infarct",
                "prior infarct",
                "post-infarction",
                "old infarction",
                "prior infarction",
                "previous infarction",
                "healed infarct",
                "remote infarct",
                "status post MI",
                "history of myocardial infarction",
                # Lay wording: longer than MYOCARDIAL_INFARCTION's "heart attack", so it wins.
                "previous heart attack",
                "prior heart attack",
                "old heart attack",
            ),
        ),
        Label(
            name="ABNORMAL_HEARTBEAT",
            description=(
                "If the rhythm is irregular, there are ectopic beats, or arrhythmia is present"
            ),
            synonyms=(
                "abnormal heart beat",
                "arrhythmia",
                "cardiac arrhythmia",
                "atrial fibrillation",
                "atrial flutter",
                "ectopic beats",
                "premature ventricular contractions",
                "irregular rhythm",
                "AFib",
                "A-fib",
                "PVCs",
                "PACs",
                "premature beats",
                "ectopy",
                "bigeminy",
                "trigeminy",
                "supraventricular tachycardia",
                "SVT",
                "ventricular tachycardia",
                "heart block",
                "AV block",
                "dysrhythmia",
                "irregularly irregular rhythm",
            ),
        ),
        Label(
            name="NORMAL",
            description=(
                "ONLY if rate is normal, rhythm is regular sinus, no Q waves, no ST changes, "
                "normal T waves"
            ),
            synonyms=(
                "normal ECG",
                "normal EKG",
                "normal electrocardiogram",
                "normal tracing",
                "unremarkable ECG",
                "within normal limits",
            ),
        ),
    ),
    negative="NORMAL",
)
"""The four ECG classes with the notebook's descriptions, in the notebook's order."""

ECG_SUBJECT_NOUNS = (
    "ecg",
    "ekg",
    "electrocardiogram",
    "12-lead ecg",
    "tracing",
    "rhythm",
    "image",
    "study",
)
"""What answers call an ECG ("the tracing shows X"): the parser's task-specific cue words."""

ECG_SYSTEM_PROMPT = "You are a medical AI assistant specialized in ECG analysis."

# The notebook's prompt, kept word for word (trailing spaces included) as version cot-v1.
ECG_COT_PROMPT = """You are a board-certified cardiologist performing a systematic ECG interpretation. Analyze this 12-lead ECG following the standard clinical approach:

**STEP 1 - RATE AND RHYTHM:**
- Calculate the heart rate. Is it bradycardic (<60), normal (60-100), or tachycardic (>100)?
- Is the rhythm regular or irregular? 
- Is there a P wave before every QRS complex?
- If rhythm is irregular, is it irregularly irregular (suggests atrial fibrillation)?

**STEP 2 - P WAVES:**
- Are P waves present and upright in leads I, II, aVF?
- Is P wave morphology normal or abnormal (peaked, notched, absent)?

**STEP 3 - PR INTERVAL:**
- Is the PR interval normal (120-200ms), prolonged (heart block), or short (pre-excitation)?

**STEP 4 - QRS COMPLEX:**
- Is the QRS narrow (<120ms) or wide?
- Are there pathological Q waves (>40ms wide or >25% of R wave amplitude)?
- Q waves in V1-V4 suggest anterior MI
- Q waves in II, III, aVF suggest inferior MI

**STEP 5 - ST SEGMENT (CRITICAL FOR MI):**
- Is there ST elevation? In which leads?
  - V1-V4 elevation = anterior STEMI
  - II, III, aVF elevation = inferior STEMI
  - I, aVL, V5-V6 elevation = lateral STEMI
- Is there ST depression? This may indicate ischemia or reciprocal changes.

**STEP 6 - T WAVES:**
- Are T waves upright, inverted, or hyperacute (tall, peaked)?
- Hyperacute T waves are an early sign of MI
- Deep symmetric T wave inversion may indicate ischemia or evolved MI

**FINAL CLASSIFICATION:**
Based on your systematic analysis above, classify this ECG as ONE of:
- **MYOCARDIAL_INFARCTION**: If you see ST elevation, hyperacute T waves, or acute ischemic changes
- **POST_MI**: If you see pathological Q waves with no acute ST elevation (indicates old/healed MI)
- **ABNORMAL_HEARTBEAT**: If the rhythm is irregular, there are ectopic beats, or arrhythmia is present
- **NORMAL**: ONLY if rate is normal, rhythm is regular sinus, no Q waves, no ST changes, normal T waves

Provide your complete analysis following each step, then state your final classification."""

ECG_DIRECT_PROMPT = """Classify this 12-lead ECG as exactly one of:
{labels}

Answer with the label name only."""

ECG_FOLDER_MAP = {
    "normal_ecg_images": "NORMAL",
    "abnormal_heartbeat_ecg_images": "ABNORMAL_HEARTBEAT",
    "myocardial_infarction_ecg_images": "MYOCARDIAL_INFARCTION",
    "post_mi_history_ecg_images": "POST_MI",
}


def make_ecg_task() -> Task:
    """Build the ECG task (registered as `ecg`)."""
    return Task(
        name="ecg",
        labels=ECG_LABELS,
        prompts={
            "cot-v1": ChatPromptTemplate(
                ECG_COT_PROMPT, system=ECG_SYSTEM_PROMPT, labels=ECG_LABELS, name="ecg/cot-v1"
            ),
            "direct-v1": ChatPromptTemplate(
                ECG_DIRECT_PROMPT,
                system=ECG_SYSTEM_PROMPT,
                labels=ECG_LABELS,
                name="ecg/direct-v1",
            ),
        },
        prompt_version="cot-v1",
        constrained_prompt_version="direct-v1",
        parser=FinalAnswerParser(ECG_LABELS, subject_nouns=ECG_SUBJECT_NOUNS),
        folder_map=ECG_FOLDER_MAP,
        params=GenerationParams(temperature=0.0, max_tokens=1024),
        description="12-lead ECG images: normal, abnormal heartbeat, MI, post-MI (Kaggle set).",
    )


ECG_TASK = make_ecg_task()
"""The ECG task with the notebook's prompt selected."""
