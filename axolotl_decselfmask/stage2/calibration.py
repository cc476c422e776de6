r"""Calibrated decisions on imbalanced test sets, fitted without reading the test file.

The failure this fixes: a classifier trained on a balanced labelled sample (16 + 16) of a
corpus with 20% positives answers "yes" to nearly every note (Macro F1 0.18 where the untrained
model scores 0.40). Its argmax is biased twice: towards the classes it learned to over-answer,
and towards the labelled sample's priors rather than the corpus'.

**Inputs.** The option scores of :func:`.scoring.score_options` (the summed log-probability of
each option as the answer, shape (n, k)), or the log-probabilities of a classification head; a
softmax over the options turns them into posteriors, :func:`posteriors`,
:math:`q(y|x) = \mathrm{softmax}_y(s_y(x)/T)` (temperature :math:`T`, 1 unless fitted).

**Bias correction on the labelled examples** (:func:`fit_bias`). Model the miscalibration as a
per-class constant in log space, :math:`q(y|x) \propto p(y|x)\,c_y`: a yes-biased model has a
large :math:`c_{yes}`; an option with more tokens has a smaller one. The corrected posterior is
:math:`q_b(y|x) \propto q(y|x)\,e^{b_y}`. The maximum-likelihood :math:`b` on the labelled
examples :math:`(x_i, y_i)_{i \le N}` makes the gradient of
:math:`\sum_i \log q_b(y_i|x_i)` vanish, i.e. the mean corrected posterior equals the labelled
label distribution:

.. math:: \frac1N \sum_i q_b(y|x_i) = \pi_{lab}(y) \quad \text{for every } y.

The objective is concave in :math:`b` (a log-sum-exp), so :math:`b` is unique up to a constant
(stored with mean 0). It is found by generalised iterative scaling (Darroch & Ratcliff 1972),
:math:`b_y \leftarrow b_y + \log\pi_{lab}(y) - \log \frac1N\sum_i q_b(y|x_i)`, whose first
step is the one-step correction :math:`q'(y|x) \propto q(y|x)\,\pi_{lab}(y) / \overline{q}_{lab}(y)`.
:math:`\pi_{lab}` is add-one smoothed, :math:`(n_y + 1)/(N + k)`, so a class without labelled
rows keeps a finite bias (a balanced sample is unchanged by it). After the correction
:math:`q_b` is calibrated (in the mean) for a population with priors :math:`\pi_{lab}`.

Optionally (``temperature=True``) :math:`T` is fitted too, as bias-corrected temperature
scaling (Alexandari, Kundaje & Shrikumar 2020, "Maximum likelihood with bias-corrected
calibration is hard-to-beat at label shift adaptation", ICML): :math:`T` minimises the labelled
examples' negative log-likelihood with :math:`b = b(T)` from the moment condition above (a
profile likelihood, bounded search over :math:`T \in [0.05, 20]`). Caution: the labelled
examples are the training examples, so their posteriors are optimistic; the fitted
:math:`T` then tends to sharpen. The bias is affected less, as long as stage 2 does not
memorise its examples (one epoch on a few dozen). A classification head, which can memorise
them, is fitted on out-of-fold scores by default (:func:`labelled_scores`).

**Prior shift** (:func:`adjust`, Saerens, Latinne & Decaestecker 2002, "Adjusting the outputs of
a classifier to new a priori probabilities: a simple procedure", Neural Computation 14(1)). A
posterior calibrated for priors :math:`\pi_t` becomes, under priors :math:`\pi'` with the same
class-conditional densities, :math:`q'(y|x) \propto q(y|x)\,\pi'(y)/\pi_t(y)`.

**EM re-estimation of the priors of an unlabelled set** (:func:`em_priors`, Saerens et al.
2002): start from :math:`\hat\pi^{(0)} = \pi_t`; E-step
:math:`q^{(s)}(y|x_i) \propto q(y|x_i)\,\hat\pi^{(s)}(y)/\pi_t(y)`; M-step
:math:`\hat\pi^{(s+1)}(y) = \frac1M\sum_i q^{(s)}(y|x_i)`; stop when no prior moves by more than
``tol``. It is the maximum-likelihood estimate of the priors of the unlabelled set under label
shift, and it assumes calibrated posteriors: on a yes-biased model it estimates even more
positives. Hence ``pool`` corrects the bias on the labelled examples first, then runs EM.

**Modes** (:class:`Calibration`; the decision is the argmax of the adjusted posterior
:math:`q(y|x) \propto \mathrm{softmax}(s/T + b)_y\;\pi_{dec}(y)/\pi_{lab}(y)`):

- ``none``: the argmax of the scores (:math:`T = 1`, :math:`b = 0`, no prior shift).
- ``balanced``: bias-corrected, then shifted to uniform priors. Maximises the expected
  balanced accuracy (mean recall); needs only the labelled examples, whatever their
  sampling. With a balanced labelled file it equals ``labelled``.
- ``labelled``: bias-corrected, priors :math:`\pi_{lab}` (for a labelled file that is a random
  sample of the notes to classify: the Bayes decision for accuracy).
- ``pool``: bias-corrected, then the priors re-estimated by EM on the corrected posteriors of
  at most a few hundred unlabelled pool notes (:func:`calibration_pool_texts`), and shifted to
  them: the Bayes decision for the pool's priors.
- ``pool_uncorrected``: EM on the raw posteriors with :math:`\pi_t = \pi_{lab}` (Saerens et al.
  as published, which trusts the model's calibration); for comparison.

Which is better for Macro F1 depends on the classifier. On synthetic two-class data (unit-variance
Gaussian classes d' apart, 16 + 16 balanced labelled examples, 256 pool notes and 1000 test notes
with 20% positives, scores = c x the true log-odds + a yes-bias of 0 or 3 nats, 20 draws each),
``balanced`` scored within 0.03 of the best mode in every setting (e.g. 0.63 / 0.78 / 0.90 at
d' = 1 / 2 / 3, where the yes-biased argmax scores 0.17-0.86); ``pool`` (the Bayes decision)
gained up to 0.02 over it for d' = 3 and lost 0.09 for d' = 1 (it predicts few positives), and
with under-confident scores (c = 0.4) EM overshoots (Macro F1 0.52 at d' = 2) unless the
temperature is fitted (0.78); ``pool_uncorrected`` was never more than 0.02 above the argmax
on the yes-biased models (it estimates even more positives). Hence the default ``balanced``.

Nothing here can read test labels: :meth:`Calibration.fit` takes the labelled (training)
examples' scores and labels and the pool notes' scores; :meth:`Calibration.decide` takes scores
only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from axolotl_decselfmask.errors import InputError

LOG = logging.getLogger(__name__)

#: the calibration modes (``classification.calibration``)
MODES = ("none", "balanced", "labelled", "pool", "pool_uncorrected")
#: modes that need pool notes' scores
POOL_MODES = ("pool", "pool_uncorrected")
#: the temperature search interval of ``temperature=True``
TEMPERATURE_RANGE = (0.05, 20.0)

_TINY = 1e-300


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _checked(scores, what: str = "scores") -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"calibration: {what} must have shape (n, k) with k >= 2 options, got {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError(f"calibration: {what} has non-finite values (NaN or inf); check the model's precision")
    return scores


def _checked_priors(priors, k: int, what: str) -> np.ndarray:
    priors = np.asarray(priors, dtype=np.float64)
    if priors.shape != (k,) or not np.isfinite(priors).all() or (priors <= 0).any():
        raise ValueError(f"calibration: {what} must be {k} positive numbers, got {priors}")
    return priors / priors.sum()


def posteriors(scores, temperature: float = 1.0) -> np.ndarray:
    """Posteriors over the options, shape (n, k): a softmax of ``scores / temperature`` per row.

    ``scores``: (n, k) summed log-probabilities of the options (:func:`.scoring.score_options`)
    or any log-scores (a head's log-probabilities). Rows sum to 1.
    """
    if temperature <= 0:
        raise ValueError(f"calibration: temperature must be positive, got {temperature}")
    return np.exp(_log_softmax(_checked(scores) / temperature))


def adjust(post, train_priors, new_priors) -> np.ndarray:
    """Bayes prior shift (Saerens et al. 2002): posteriors calibrated for ``train_priors``
    re-weighted by ``new_priors / train_priors`` and renormalised, shape (n, k)."""
    post = np.asarray(post, dtype=np.float64)
    k = post.shape[1]
    ratio = _checked_priors(new_priors, k, "new_priors") / _checked_priors(train_priors, k, "train_priors")
    out = post * ratio
    return out / np.maximum(out.sum(axis=1, keepdims=True), _TINY)


class PriorEstimate(NamedTuple):
    priors: np.ndarray
    iterations: int
    converged: bool


def estimate_priors(post, train_priors, max_iter: int = 100, tol: float = 1e-6) -> PriorEstimate:
    """:func:`em_priors` with the number of EM iterations run and whether it converged."""
    post = np.asarray(post, dtype=np.float64)
    if post.ndim != 2 or len(post) == 0:
        raise ValueError(f"calibration: EM needs the posteriors of at least one note, got shape {post.shape}")
    t = _checked_priors(train_priors, post.shape[1], "train_priors")
    log_post = np.log(np.maximum(post, _TINY))
    priors = t.copy()
    for iteration in range(1, max_iter + 1):
        shifted = np.exp(_log_softmax(log_post + np.log(np.maximum(priors, _TINY)) - np.log(t)))
        new = shifted.mean(axis=0)
        if np.abs(new - priors).max() < tol:
            return PriorEstimate(new, iteration, True)
        priors = new
    return PriorEstimate(priors, max_iter, False)


def em_priors(post, train_priors, max_iter: int = 100, tol: float = 1e-6) -> np.ndarray:
    """Class priors of an unlabelled set by EM (Saerens, Latinne & Decaestecker 2002).

    ``post``: (m, k) posteriors of the set's notes from a classifier calibrated for
    ``train_priors``. E-step: the posteriors shifted to the current priors (:func:`adjust`);
    M-step: the priors are their mean. Starts at ``train_priors``; stops when no prior moves by
    ``tol`` or after ``max_iter`` iterations. Returns the priors, shape (k,), summing to 1.
    """
    return estimate_priors(post, train_priors, max_iter, tol).priors


def label_distribution(label_index, k: int, smoothing: float = 1.0) -> np.ndarray:
    """The smoothed label distribution ``(count + smoothing) / (n + k * smoothing)``, shape (k,)."""
    counts = np.bincount(np.asarray(label_index, dtype=np.int64), minlength=k)[:k].astype(np.float64)
    return (counts + smoothing) / (counts.sum() + k * smoothing)


def fit_bias(log_post, target_priors, max_iter: int = 1000, tol: float = 1e-9) -> np.ndarray:
    """The per-class log-bias ``b`` (shape (k,), mean 0) that makes the mean of
    ``softmax(log_post + b)`` over the rows equal ``target_priors``.

    ``log_post``: (n, k) log-posteriors (or log-scores) of the labelled examples; with
    ``target_priors`` their label distribution this is the maximum-likelihood bias (see the
    module docstring). Generalised iterative scaling, at most ``max_iter`` steps, until the mean
    posterior is within ``tol`` of the target.
    """
    log_post = _checked(log_post, "log_post")
    target = _checked_priors(target_priors, log_post.shape[1], "target_priors")
    b = np.zeros(log_post.shape[1])
    for _ in range(max_iter):
        mean = np.exp(_log_softmax(log_post + b)).mean(axis=0)
        if np.abs(mean - target).max() < tol:
            break
        b += np.log(target) - np.log(np.maximum(mean, _TINY))
    return b - b.mean()


def fit_temperature(scores, label_index, target_priors) -> tuple[float, np.ndarray]:
    """Bias-corrected temperature scaling: the ``T`` in :data:`TEMPERATURE_RANGE` minimising the
    labelled examples' negative log-likelihood with ``b = fit_bias(scores / T, target_priors)``.
    Returns ``(T, b)``."""
    from scipy.optimize import minimize_scalar

    scores = _checked(scores)
    y = np.asarray(label_index, dtype=np.int64)
    rows = np.arange(len(y))

    def nll(log_t: float) -> float:
        z = scores / np.exp(log_t)
        return float(-_log_softmax(z + fit_bias(z, target_priors))[rows, y].sum())

    lo, hi = np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1])
    best = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    t = float(np.exp(best.x))
    return t, fit_bias(scores / t, target_priors)


def _label_index(labels, options: list[str]) -> np.ndarray:
    index = {o: i for i, o in enumerate(options)}
    bad = sorted({str(v) for v in labels if v not in index})
    if bad:
        raise InputError(f"calibration: labelled examples have labels {bad} that are not among the options {options}.")
    return np.array([index[v] for v in labels], dtype=np.int64)


@dataclass
class Calibration:
    """A fitted decision rule: ``decide(scores)`` is the argmax of
    ``softmax(scores / temperature + log_bias) * priors / reference_priors``.

    ``reference_priors``: the priors the bias-corrected posteriors are calibrated for (the
    smoothed labelled distribution; uniform for ``none``). ``priors``: the decision's priors.
    Build it with :meth:`fit`.
    """

    mode: str
    options: list[str]
    temperature: float = 1.0
    log_bias: np.ndarray | None = None
    reference_priors: np.ndarray | None = None
    priors: np.ndarray | None = None
    n_labelled: int = 0
    n_pool: int = 0
    em_iterations: int | None = None
    em_converged: bool | None = None
    fitted_temperature: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"calibration mode must be one of {MODES}, got {self.mode!r}")
        k = len(self.options)
        uniform = np.full(k, 1.0 / k)
        self.log_bias = np.zeros(k) if self.log_bias is None else np.asarray(self.log_bias, dtype=np.float64)
        self.reference_priors = uniform if self.reference_priors is None else np.asarray(self.reference_priors)
        self.priors = self.reference_priors.copy() if self.priors is None else np.asarray(self.priors)

    @classmethod
    def fit(cls, mode: str, options: list[str], labelled_scores=None, labelled_labels=None, pool_scores=None,
            temperature: bool = False, max_iter: int = 1000, tol: float = 1e-6) -> "Calibration":
        """Fit the decision rule of ``mode`` (one of :data:`MODES`) from what may be used.

        ``labelled_scores``: (N, k) option scores of the labelled (training) examples, in the
        order of ``options``; ``labelled_labels``: their labels (strings among ``options``);
        ``pool_scores``: (M, k) option scores of unlabelled pool notes (``pool`` modes only).
        ``temperature``: also fit the softmax temperature (bias-corrected temperature scaling).
        ``max_iter``, ``tol``: of the EM. There is no parameter for test data.
        """
        options = list(options)
        if mode not in MODES:
            raise InputError(f"decselfmask.classification.calibration must be one of {list(MODES)}, got {mode!r}.")
        if mode == "none":
            return cls(mode, options)
        if labelled_labels is None or len(labelled_labels) == 0:
            raise InputError(f"calibration {mode!r} needs the labelled examples (classification.train_file).")
        y = _label_index(labelled_labels, options)
        reference = label_distribution(y, len(options))
        calibration = cls(mode, options, reference_priors=reference, n_labelled=len(y))
        if mode != "pool_uncorrected":
            calibration._fit_correction(labelled_scores, y, temperature)
        if mode == "balanced":
            calibration.priors = np.full(len(options), 1.0 / len(options))
        elif mode in POOL_MODES:
            calibration._fit_pool_priors(pool_scores, max_iter, tol)
        return calibration

    def _fit_correction(self, labelled_scores, y: np.ndarray, temperature: bool) -> None:
        if labelled_scores is None:
            raise ValueError(f"calibration {self.mode!r}: labelled_scores are needed for the bias correction")
        scores = _checked(labelled_scores, "labelled_scores")
        if scores.shape != (len(y), len(self.options)):
            raise ValueError(f"calibration: labelled_scores has shape {scores.shape}, expected "
                             f"({len(y)}, {len(self.options)}) (one row per labelled example, one column per option)")
        if temperature:
            self.temperature, self.log_bias = fit_temperature(scores, y, self.reference_priors)
            self.fitted_temperature = True
        else:
            self.log_bias = fit_bias(_log_softmax(scores), self.reference_priors)

    def _fit_pool_priors(self, pool_scores, max_iter: int, tol: float) -> None:
        if pool_scores is None or len(pool_scores) == 0:
            raise InputError(
                f"decselfmask.classification.calibration: {self.mode} needs unlabelled pool notes, and none were "
                "given: add the pool dataset, raise classification.calibration_pool_texts, or use "
                "calibration: balanced or labelled.")
        pool = _checked(pool_scores, "pool_scores")
        if pool.shape[1] != len(self.options):
            raise ValueError(f"calibration: pool_scores has {pool.shape[1]} columns for {len(self.options)} options")
        estimate = estimate_priors(self.corrected(pool), self.reference_priors, max_iter, tol)
        if not estimate.converged:
            LOG.warning("decselfmask calibration: EM did not converge in %d iterations; using its last priors",
                        max_iter)
        self.priors, self.n_pool = estimate.priors, len(pool)
        self.em_iterations, self.em_converged = estimate.iterations, estimate.converged

    def corrected(self, scores) -> np.ndarray:
        """Bias-corrected (and temperature-scaled) posteriors, calibrated for ``reference_priors``."""
        return np.exp(_log_softmax(_checked(scores) / self.temperature + self.log_bias))

    def adjusted(self, scores) -> np.ndarray:
        """The posteriors the decision is the argmax of, shape (n, k)."""
        return adjust(self.corrected(scores), self.reference_priors, self.priors)

    def decide(self, scores) -> tuple[np.ndarray, np.ndarray]:
        """``(pred_index, adjusted_posteriors)`` for option scores of shape (n, k)."""
        scores = _checked(scores)
        if scores.shape[1] != len(self.options):
            raise ValueError(f"calibration: scores have {scores.shape[1]} columns for {len(self.options)} options")
        if self.mode == "none":
            return scores.argmax(axis=1), posteriors(scores)
        post = self.adjusted(scores)
        return post.argmax(axis=1), post

    def to_dict(self, exact: bool = False) -> dict:
        """What ``metrics.json`` records of the decision: mode, priors, bias, counts, EM iterations
        (rounded to 6 digits). ``exact``: every field at full precision, with the ``options``, so
        that :meth:`from_dict` rebuilds the same decision (what ``stage2/calibration-<task>.json`` holds)."""
        def per_option(values) -> dict:
            return {o: float(v) if exact else round(float(v), 6) for o, v in zip(self.options, values)}

        out = {"mode": self.mode}
        if exact:
            out["options"] = list(self.options)
        if self.mode == "none":
            return out
        out.update(priors=per_option(self.priors), reference_priors=per_option(self.reference_priors),
                   log_bias=per_option(self.log_bias),
                   temperature=float(self.temperature) if exact else round(float(self.temperature), 6),
                   fitted_temperature=self.fitted_temperature, n_labelled=self.n_labelled)
        if self.mode in POOL_MODES:
            out.update(n_pool=self.n_pool, em_iterations=self.em_iterations, em_converged=self.em_converged)
        return out

    @classmethod
    def from_dict(cls, d: dict, options: list[str] | None = None) -> "Calibration":
        """The calibration :meth:`to_dict` described: from ``to_dict(exact=True)`` as it is, or from
        ``metrics.json``'s (rounded) entry with ``options``, the task's labels in order."""
        if not isinstance(d, dict) or d.get("mode") not in MODES:
            raise ValueError(f"calibration: not a calibration record (mode {d.get('mode') if isinstance(d, dict) else d!r})")
        options = list(d.get("options") or options or [])
        if len(options) < 2:
            raise ValueError("calibration: the record names no options; pass the task's labels")

        def vector(key: str):
            value = d.get(key)
            if value is None:
                return None
            if isinstance(value, dict):
                missing = [o for o in options if o not in value]
                if missing:
                    raise ValueError(f"calibration: {key} has no value for the options {missing}")
                value = [value[o] for o in options]
            if len(value) != len(options):
                raise ValueError(f"calibration: {key} has {len(value)} values for {len(options)} options")
            return np.asarray(value, dtype=np.float64)

        def priors(key: str):  # a prior below metrics.json's rounding reads 0: keep it positive
            value = vector(key)
            return None if value is None else np.where(value > 0, value, 1e-12)

        return cls(d["mode"], options, temperature=float(d.get("temperature", 1.0)), log_bias=vector("log_bias"),
                   reference_priors=priors("reference_priors"), priors=priors("priors"),
                   n_labelled=int(d.get("n_labelled", 0)), n_pool=int(d.get("n_pool") or 0),
                   em_iterations=d.get("em_iterations"), em_converged=d.get("em_converged"),
                   fitted_temperature=bool(d.get("fitted_temperature", False)))


#: the ``format`` of a saved decision (:func:`calibration_record`)
CALIBRATION_FORMAT = "decselfmask-calibration"


def calibration_record(calibration: "Calibration", **info) -> dict:
    """What ``stage2/calibration-<task>.json`` holds (:func:`.outputs.write_calibration`):
    ``calibration`` exactly (:meth:`Calibration.to_dict`) and ``info`` (the task, how its scores are made)."""
    return {"format": CALIBRATION_FORMAT, "version": 1, **info, "calibration": calibration.to_dict(exact=True)}


def calibration_from_record(record, where) -> "Calibration":
    """The calibration of a record :func:`calibration_record` made (read from ``where``); an
    InputError otherwise."""
    try:
        if not isinstance(record, dict) or record.get("format") != CALIBRATION_FORMAT:
            raise ValueError("not a calibration file")
        return Calibration.from_dict(record["calibration"])
    except (KeyError, ValueError) as exc:
        raise InputError(f"{where}: not a readable calibration ({exc}); run `axolotl train` again.") from exc


def fit_from_config(c, options: list[str], labelled_scores=None, labelled_labels=None,
                    pool_scores=None) -> Calibration:
    """:meth:`Calibration.fit` with a task's ``classification.calibration`` and
    ``calibration_temperature`` (a :class:`.args.ClassificationConfig`)."""
    return Calibration.fit(c.calibration, options, labelled_scores, labelled_labels, pool_scores,
                           temperature=c.calibration_temperature)


def labelled_scores(task, scorer):
    """The scores the decision of ``task`` is fitted on: its labelled examples' out-of-fold scores
    where ``scorer``'s head has them (``classification.head.decision_scores: out_of_fold``,
    :func:`.head.out_of_fold_scores`: each example scored by a head that was not trained on it),
    else ``scorer(task.train_texts)`` (for a head: the head trained on these very examples)."""
    out_of_fold = getattr(getattr(scorer, "head", None), "out_of_fold", None)
    if out_of_fold is not None and out_of_fold.covers(task.train_texts):
        return out_of_fold.scores
    return scorer(task.train_texts)


def calibrate(task, scorer, pool_texts: list[str] | None) -> Calibration:
    """The decision rule of ``task`` (a :class:`.tasks.Task`) from its labelled examples' scores by
    ``scorer`` (texts -> (n, options); :func:`labelled_scores`), and pool notes' for the pool modes;
    no test text is read."""
    c = task.settings
    labelled = labelled_scores(task, scorer) if c.calibration != "none" else None
    pool = scorer(pool_texts or []) if c.calibration in POOL_MODES else None
    return fit_from_config(c, task.data.labels, labelled, task.train_labels if labelled is not None else None, pool)


def calibration_pool_texts(cfg, config, n: int) -> list[str]:
    """At most ``n`` unlabelled notes for the ``pool`` calibration modes, never a test text.

    The texts of the recipe's pool datasets (every ``datasets:`` entry of the plugin's types, read
    as stage 1 reads them, :func:`.stage1.pool.read_pool_as_axolotl`), non-empty, without any
    text equal (up to whitespace and case) to a test text of any task, then a random sample of
    ``n`` (seeded by ``decselfmask.seed``) kept in pool order; all of them when there are fewer.
    Not cut to ``decselfmask.max_texts`` (a stage-1 cost limit). Truncate them as the test texts
    are before scoring. ``config``: the :class:`.args.DecSelfMaskConfig`; an :class:`InputError`
    when the recipe has no pool dataset.
    """
    from axolotl_decselfmask.io.labelled import overlapping_rows, split_test_texts
    from axolotl_decselfmask.io.tables import (
        clean_texts,
        dataset_text_column,
        read_table,
    )
    from axolotl_decselfmask.stage1.pool import POOL_TYPES, read_pool_as_axolotl

    entries = [d for d in (cfg.get("datasets") or []) if hasattr(d, "get") and d.get("type") in POOL_TYPES]
    if not entries:
        raise InputError(
            "decselfmask.classification.calibration: the pool modes need unlabelled notes, and the recipe has no "
            f"datasets entry of type {' or '.join(POOL_TYPES)}: add one, or set calibration: balanced or labelled.")
    texts: list[str] = []
    for entry in entries:
        column = dataset_text_column(entry)
        kept, _, _ = clean_texts(read_pool_as_axolotl(entry, cfg, column), entry.get("path"), column)
        texts.extend(kept)
    test_texts: list[str] = []
    for c in config.task_configs() if config.classification.enabled else []:
        if c.test_fraction is not None and c.train_file:
            test_texts.extend(split_test_texts(c, config.seed, cfg.output_dir))
        elif c.test_file:
            rows = read_table(c.test_file, "decselfmask.classification.test_file")
            test_texts.extend(str(r.get(c.text_column)) for r in rows if isinstance(r.get(c.text_column), str))
    drop = {i for i, _ in overlapping_rows(texts, test_texts)}
    if drop:
        LOG.info("decselfmask calibration: %d pool notes are also test texts and are not used", len(drop))
        texts = [t for i, t in enumerate(texts) if i not in drop]
    if len(texts) > n:
        pick = np.sort(np.random.default_rng(config.seed).choice(len(texts), size=n, replace=False))
        texts = [texts[i] for i in pick]
    return texts
