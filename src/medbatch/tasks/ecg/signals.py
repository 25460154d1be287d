"""Synthetic 12-lead ECG signals: the physiology (beats, rhythms, leads), NOT clinical data.

Part of the ECG task; it imports numpy only (no PIL, no datasets). The rest of this text
describes the whole generator: `medbatch.tasks.ecg.paper` draws the page.


The generator gives the project ECG images to test and demo with offline. Each page looks like
the scanned printouts of the Kaggle/Mendeley ECG image set (2213×1572 px, pink 1 mm / 5 mm
grid, 25 mm/s, 10 mm/mV):

```
┌──────────────────────────────────────────────────────────────────────┐
│ header: synthetic ID, rate, "not clinical data"                     │
│ ┌┐ I ~~~~~~~~~~~~~ | aVR ~~~~~~~~~~~~ | V1 ~~~~~~~~~~~ | V4 ~~~~~~~~~ │
│ ┌┐ II ~~~~~~~~~~~~ | aVL ~~~~~~~~~~~~ | V2 ~~~~~~~~~~~ | V5 ~~~~~~~~~ │
│ ┌┐ III ~~~~~~~~~~~ | aVF ~~~~~~~~~~~~ | V3 ~~~~~~~~~~~ | V6 ~~~~~~~~~ │
│ ┌┐ II (rhythm strip, 10 s) ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~ │
│ footer: 25 mm/s  10 mm/mV  filter                                    │
└──────────────────────────────────────────────────────────────────────┘
 ┌┐ = 1 mV calibration pulse (10 mm high, 0.2 s wide)
```

All twelve leads come from one simulated 10 s recording, so each column shows the same
2.5 s of time (as a real cart prints it) and an ectopic beat appears in every lead at once.
The waveforms are sums of Gaussian waves (P, Q, R, S, T) per beat; leads I and II and
V1-V6 are synthesised and III, aVR, aVL and aVF derived from Einthoven's and Goldberger's
relations, so the limb leads are consistent (an inferior ST elevation brings its reciprocal
depression in aVL by itself).

Classes (the Kaggle ECG task's labels):

- `NORMAL`: sinus rhythm 58-95 bpm, normal axis and R-wave progression.
- `ABNORMAL_HEARTBEAT`: atrial fibrillation, premature ventricular beats (single or
  bigeminy) or premature atrial beats.
- `MYOCARDIAL_INFARCTION`: ST elevation with hyperacute T in one territory (anterior V1-V4,
  inferior II/III/aVF or lateral I/aVL/V5-V6), reciprocal depression.
- `POST_MI`: pathological Q waves (deep, >40 ms) with lost R and inverted T in a territory,
  no ST elevation.

Example:
    >>> from medbatch.tasks.ecg.paper import render_ecg_page
    >>> page = render_ecg_page("POST_MI", seed=7, size=(1106, 786))
    >>> page.size
    (1106, 786)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "ECG_CLASSES",
    "KAGGLE_ECG_SUBDIR",
    "KAGGLE_PAGE_SIZE",
    "LEAD_NAMES",
    "EcgClass",
    "synthesize_ecg",
]

FloatArray = npt.NDArray[np.float64]

KAGGLE_PAGE_SIZE: tuple[int, int] = (2213, 1572)
"""Pixel size (width, height) of the Kaggle/Mendeley ECG scans."""

KAGGLE_ECG_SUBDIR = Path("ecg_data_new_version") / "ecg data new version"
"""Where the class folders sit inside the downloaded `evilspirit05/ecg-analysis` set."""

LEAD_NAMES: tuple[str, ...] = (
    "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6",
)  # fmt: skip
"""The 12 standard leads, in the order waveforms are stored."""


@dataclass(frozen=True)
class EcgClass:
    """One ECG class as the Kaggle set lays it out.

    Attributes:
        label: The task's label name.
        folder: The Kaggle class folder.
        prefix: The file-name prefix, as in `Normal(12).jpg`.
    """

    label: str
    folder: str
    prefix: str


ECG_CLASSES: tuple[EcgClass, ...] = (
    EcgClass("NORMAL", "normal_ecg_images", "Normal"),
    EcgClass("ABNORMAL_HEARTBEAT", "abnormal_heartbeat_ecg_images", "HB"),
    EcgClass("MYOCARDIAL_INFARCTION", "myocardial_infarction_ecg_images", "MI"),
    EcgClass("POST_MI", "post_mi_history_ecg_images", "PMI"),
)
"""The four classes of the Kaggle ECG image set, in the task's label order."""

_CLASS_BY_LABEL = {cls.label: cls for cls in ECG_CLASSES}

# ---------------------------------------------------------------------------------------------
# Signal synthesis
# ---------------------------------------------------------------------------------------------

_FS = 500.0  # Hz; 2-3 samples per pixel at the Kaggle page size, enough for a sharp QRS.
_DURATION_S = 10.0
# The independent leads; the other four limb leads are derived from I and II.
_BASE_LEADS = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
_TEMPLATE_T = np.arange(-0.35, 0.65, 1.0 / _FS)  # beat template time axis, R peak at 0


@dataclass
class _Wave:
    """One Gaussian wave of a beat: amplitude per base lead (mV), centre and widths (s)."""

    amps: dict[str, float]
    centre: float
    sigma_left: float
    sigma_right: float | None = None

    def shape(self, t: FloatArray) -> FloatArray:
        right = self.sigma_left if self.sigma_right is None else self.sigma_right
        sigma = np.where(t < self.centre, self.sigma_left, right)
        out: FloatArray = np.exp(-0.5 * ((t - self.centre) / sigma) ** 2)
        return out


@dataclass
class _Beat:
    """A beat morphology: its waves plus an ST-segment shift per base lead (mV)."""

    waves: list[_Wave]
    st: dict[str, float] = field(default_factory=dict)
    t_end: float = 0.36  # where the ST shift has merged into the T wave

    def template(self) -> dict[str, FloatArray]:
        t = _TEMPLATE_T
        out = {lead: np.zeros_like(t) for lead in _BASE_LEADS}
        for wave in self.waves:
            shape = wave.shape(t)
            for lead, amp in wave.amps.items():
                if amp:
                    out[lead] += amp * shape
        if self.st:
            # A plateau from the J point to the end of T: the "tombstone" of acute injury.
            rise = 1.0 / (1.0 + np.exp(-(t - 0.045) / 0.006))
            fall = 1.0 / (1.0 + np.exp((t - self.t_end) / 0.035))
            plateau = rise * fall
            for lead, shift in self.st.items():
                out[lead] += shift * plateau
        return out


def _normal_amplitudes(rng: np.random.Generator) -> dict[str, dict[str, float]]:
    """Typical adult amplitudes (mV) of P, Q, R, S, T per base lead, jittered per page."""
    table = {
        #       P      Q      R      S      T
        "I": (0.08, -0.05, 0.55, -0.12, 0.22),
        "II": (0.14, -0.06, 1.00, -0.20, 0.32),
        "V1": (0.06, 0.00, 0.22, -0.95, 0.06),
        "V2": (0.07, 0.00, 0.45, -1.25, 0.45),
        "V3": (0.07, 0.00, 0.80, -0.85, 0.50),
        "V4": (0.07, -0.03, 1.25, -0.50, 0.45),
        "V5": (0.07, -0.07, 1.35, -0.25, 0.35),
        "V6": (0.06, -0.07, 1.00, -0.15, 0.28),
    }
    gain = rng.uniform(0.75, 1.25)  # body habitus: all voltages scale together
    axis = rng.uniform(-0.25, 0.25)  # frontal axis: trade amplitude between I and II
    out: dict[str, dict[str, float]] = {"P": {}, "Q": {}, "R": {}, "S": {}, "T": {}}
    for lead, values in table.items():
        lead_gain = gain * rng.normal(1.0, 0.08)
        if lead == "I":
            lead_gain *= 1.0 - axis
        elif lead == "II":
            lead_gain *= 1.0 + 0.5 * axis
        for name, value in zip("PQRST", values, strict=True):
            out[name][lead] = value * lead_gain
    return out


def _sinus_beat(amps: Mapping[str, Mapping[str, float]], qt: float, pr: float) -> _Beat:
    t_centre = 0.04 + 0.62 * qt  # T peak sits about two thirds into the QT interval
    return _Beat(
        waves=[
            _Wave(dict(amps["P"]), -pr + 0.05, 0.022),
            # The small negative second half of the P wave in V1 (biphasic P).
            _Wave({"V1": -0.04}, -pr + 0.075, 0.014),
            _Wave(dict(amps["Q"]), -0.028, 0.008),
            _Wave(dict(amps["R"]), 0.0, 0.0105),
            _Wave(dict(amps["S"]), 0.027, 0.0095),
            _Wave(dict(amps["T"]), t_centre, 0.058, 0.040),
        ],
        t_end=t_centre,
    )


_TERRITORIES: dict[str, dict[str, float]] = {
    # Relative weight of the injury per base lead. Limb leads other than I and II follow from
    # the derivation (III = II - I, aVL = I - II/2, aVF = II - I/2, aVR = -(I + II)/2).
    "anterior": {"V1": 0.5, "V2": 0.9, "V3": 1.0, "V4": 0.8, "V5": 0.3, "I": 0.15},
    "inferior": {"II": 0.7, "I": -0.35, "V1": -0.3, "V2": -0.35, "V3": -0.2, "V6": 0.25},
    "lateral": {"I": 0.8, "II": 0.2, "V5": 0.9, "V6": 0.9, "V4": 0.35, "V1": -0.3},
}
# Leads whose QRS is replaced by a pathological Q in an old infarct of each territory.
_Q_LEADS: dict[str, dict[str, float]] = {
    "anterior": {"V1": 1.0, "V2": 1.0, "V3": 1.0, "V4": 0.7},
    "inferior": {"II": 1.0, "I": -0.15},
    "lateral": {"I": 1.0, "II": -0.2, "V5": 0.8, "V6": 0.8},
}


def _stemi_beat(
    amps: dict[str, dict[str, float]], qt: float, pr: float, territory: str, size: float
) -> _Beat:
    weights = _TERRITORIES[territory]
    for lead, weight in weights.items():
        if weight > 0:
            # Hyperacute T: tall and broad where the ST segment is raised.
            amps["T"][lead] = abs(amps["T"][lead]) + 0.6 * size * weight
    beat = _sinus_beat(amps, qt, pr)
    beat.st = {lead: size * weight for lead, weight in weights.items()}
    return beat


def _old_mi_beat(
    amps: dict[str, dict[str, float]],
    qt: float,
    pr: float,
    territory: str,
    rng: np.random.Generator,
) -> _Beat:
    depth = rng.uniform(0.35, 0.6)
    q_amps: dict[str, float] = {}
    for lead, weight in _Q_LEADS[territory].items():
        if weight > 0:
            amps["R"][lead] *= 0.25  # the scar no longer depolarises: R is lost
            amps["Q"][lead] = 0.0
            q_amps[lead] = -depth * weight
            # Evolved infarct: shallow symmetric T inversion in the same leads.
            amps["T"][lead] = -abs(amps["T"][lead]) * rng.uniform(0.4, 0.9)
        else:
            q_amps[lead] = depth * -weight  # mirror image in the opposite leads
    beat = _sinus_beat(amps, qt, pr)
    # Wide (>40 ms) and deep (>25 % of R) Q: the sign of an old, healed infarct.
    beat.waves.append(_Wave(q_amps, -0.012, 0.017))
    return beat


def _pvc_beat(rng: np.random.Generator, gain: float) -> _Beat:
    # A wide, bizarre QRS without P wave and with a T wave opposite to it (discordant).
    sign = 1.0 if rng.random() < 0.5 else -1.0  # left- or right-ventricular origin
    qrs = {
        "I": 1.1 * sign, "II": 0.6, "V1": -1.3 * sign, "V2": -1.5 * sign, "V3": -0.6 * sign,
        "V4": 0.7 * sign, "V5": 1.3 * sign, "V6": 1.3 * sign,
    }  # fmt: skip
    qrs = {lead: value * gain * rng.uniform(0.85, 1.2) for lead, value in qrs.items()}
    return _Beat(
        waves=[
            _Wave(qrs, 0.0, 0.034, 0.040),
            _Wave({lead: -0.35 * value for lead, value in qrs.items()}, 0.3, 0.07, 0.05),
        ]
    )


def _add_beat(
    signals: dict[str, FloatArray], template: Mapping[str, FloatArray], r_time: float
) -> None:
    start = round((r_time + _TEMPLATE_T[0]) * _FS)
    n = len(_TEMPLATE_T)
    total = len(next(iter(signals.values())))
    lo, hi = max(start, 0), min(start + n, total)
    if lo >= hi:
        return
    for lead in _BASE_LEADS:
        signals[lead][lo:hi] += template[lead][lo - start : hi - start]


def synthesize_ecg(label: str, seed: int) -> tuple[dict[str, FloatArray], dict[str, Any]]:
    """Simulate a 10 s, 12-lead recording of the given class.

    Args:
        label: One of `NORMAL`, `ABNORMAL_HEARTBEAT`, `MYOCARDIAL_INFARCTION`, `POST_MI`.
        seed: Any integer; the same `(label, seed)` always gives the same recording.

    Returns:
        `(signals, facts)`: signals in mV sampled at 500 Hz keyed by lead name (`LEAD_NAMES`),
        and facts about what was simulated (`rate_bpm`, `rhythm`, `finding`, `territory`).

    Raises:
        ValueError: `label` is not one of the four ECG classes.
    """
    if label not in _CLASS_BY_LABEL:
        raise ValueError(
            f"unknown ECG class {label!r}; expected one of {', '.join(_CLASS_BY_LABEL)}"
        )
    class_index = [cls.label for cls in ECG_CLASSES].index(label)
    rng = np.random.default_rng([seed & 0xFFFFFFFF, class_index, 0x5EC6])
    n = round(_DURATION_S * _FS)
    t = np.arange(n) / _FS
    amps = _normal_amplitudes(rng)
    gain = float(np.mean([abs(v) for v in amps["R"].values()]))

    rate = rng.uniform(58.0, 95.0)
    rhythm = "sinus"
    if label == "ABNORMAL_HEARTBEAT":
        rhythm = str(rng.choice(["afib", "pvc", "bigeminy", "pac"], p=[0.35, 0.3, 0.15, 0.2]))
        if rhythm == "afib":
            rate = rng.uniform(80.0, 135.0)
    rr = 60.0 / rate
    qt = 0.40 * np.sqrt(rr)  # Bazett: QTc about 400 ms
    pr = rng.uniform(0.13, 0.19)
    facts: dict[str, Any] = {"rhythm": rhythm, "finding": "none", "rate_bpm": round(rate)}
    beat = _morphology(label, amps, qt, pr, rng, facts=facts)

    signals = {lead: np.zeros(n) for lead in _BASE_LEADS}
    templates = {"normal": beat.template()}
    if rhythm == "afib":
        # No P waves: the atria fibrillate, drawn as a wavy baseline instead.
        templates["normal"] = _Beat(
            [w for w in beat.waves if w.centre > -pr + 0.1], beat.st
        ).template()
        f_wave = np.zeros(n)
        for _ in range(3):
            freq, phase = rng.uniform(4.5, 8.5), rng.uniform(0.0, 6.0)
            f_wave += rng.uniform(0.02, 0.05) * np.sin(2 * np.pi * freq * t + phase)
        for lead, weight in {"I": 0.4, "II": 1.0, "V1": 1.3, "V2": 0.9, "V3": 0.5}.items():
            signals[lead] += weight * f_wave
    schedule = _beat_schedule(rhythm, rr, rng)
    kinds = {kind for _, kind in schedule}
    if "pvc" in kinds:
        templates["pvc"] = _pvc_beat(rng, gain).template()
    if "pac" in kinds:
        pac_amps = {name: dict(values) for name, values in amps.items()}
        pac_amps["P"] = {lead: -0.6 * v for lead, v in amps["P"].items()}  # ectopic focus
        templates["pac"] = _sinus_beat(pac_amps, qt, pr * 0.8).template()
    for r_time, kind in schedule:
        _add_beat(signals, templates[kind], r_time)

    # Baseline wander (breathing, electrode drift) and a little muscle noise.
    for lead in _BASE_LEADS:
        freq, phase = rng.uniform(0.12, 0.35), rng.uniform(0.0, 2 * np.pi)
        wander = rng.uniform(0.02, 0.08) * np.sin(2 * np.pi * freq * t + phase)
        signals[lead] += wander + rng.normal(0.0, 0.008, n)
    return _derive_limb_leads(signals), facts


def _morphology(
    label: str,
    amps: dict[str, dict[str, float]],
    qt: float,
    pr: float,
    rng: np.random.Generator,
    *,
    facts: dict[str, Any],
) -> _Beat:
    """The conducted beat of a class (ST elevation, Q waves or normal)."""
    if label == "MYOCARDIAL_INFARCTION":
        territory = str(rng.choice(list(_TERRITORIES)))
        facts.update(finding=f"ST elevation, {territory}", territory=territory)
        return _stemi_beat(amps, qt, pr, territory, rng.uniform(0.2, 0.4))
    if label == "POST_MI":
        territory = str(rng.choice(list(_Q_LEADS)))
        facts.update(finding=f"pathological Q waves, {territory}", territory=territory)
        return _old_mi_beat(amps, qt, pr, territory, rng)
    return _sinus_beat(amps, qt, pr)


def _beat_schedule(rhythm: str, rr: float, rng: np.random.Generator) -> list[tuple[float, str]]:
    """R-peak times over the strip (plus a little beyond) and each beat's kind."""
    schedule: list[tuple[float, str]] = []
    r = rng.uniform(0.15, 0.6)
    if rhythm == "afib":
        # Irregularly irregular: every RR interval independent of the last.
        while r < _DURATION_S + 0.4:
            schedule.append((r, "normal"))
            r += rr * rng.uniform(0.55, 1.5)
        return schedule
    ectopic_at: set[int] = set()
    if rhythm in ("pvc", "pac"):
        n_beats = int(_DURATION_S / rr)
        count = int(rng.integers(1, 4))
        ectopic_at = {int(i) for i in rng.choice(np.arange(2, max(n_beats - 1, 3)), count)}
    i = 0
    while r < _DURATION_S + 0.4:
        is_ectopic = (rhythm == "bigeminy" and i % 2 == 1) or i in ectopic_at
        if is_ectopic and rhythm in ("pvc", "bigeminy"):
            # Early, and the sinus node keeps its rhythm: a full compensatory pause follows.
            schedule.append((r - rr + rr * rng.uniform(0.55, 0.68), "pvc"))
        elif is_ectopic:
            # A premature atrial beat resets the sinus node: no compensatory pause.
            r = r - rr + rr * rng.uniform(0.6, 0.75)
            schedule.append((r, "pac"))
        else:
            schedule.append((r, "normal"))
        # Sinus arrhythmia: the RR interval breathes by a few per cent.
        r += rr * (1.0 + 0.03 * np.sin(2 * np.pi * 0.25 * r) + rng.normal(0.0, 0.008))
        i += 1
    return schedule


def _derive_limb_leads(base: Mapping[str, FloatArray]) -> dict[str, FloatArray]:
    lead_i, lead_ii = base["I"], base["II"]
    derived = {
        "III": lead_ii - lead_i,
        "aVR": -(lead_i + lead_ii) / 2.0,
        "aVL": lead_i - lead_ii / 2.0,
        "aVF": lead_ii - lead_i / 2.0,
    }
    return {lead: base[lead] if lead in base else derived[lead] for lead in LEAD_NAMES}


# ---------------------------------------------------------------------------------------------
# Paper rendering
# ---------------------------------------------------------------------------------------------
