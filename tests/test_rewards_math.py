"""Math reward: boxed extraction, the answer table, the worker pool's hard timeout, DAPO shaping."""

from __future__ import annotations

import importlib.util
import os
import signal
import threading
import time

import pytest

from entropyrl.rewards import (
    MathScorer,
    RewardPool,
    answers_match,
    format_reward,
    has_boxed,
    last_boxed,
    normalize_answer,
    overlong_penalties,
    overlong_penalty,
    score_response,
)

# Extraction and DAPO shaping need nothing else; equivalence needs the math-verify package.
needs_math_verify = pytest.mark.skipif(
    importlib.util.find_spec("math_verify") is None, reason="math-verify is not installed"
)

# --------------------------------------------------------------------------------------------
# Extraction of the last \boxed{}
# --------------------------------------------------------------------------------------------

BOXED_CASES = [
    (r"so the answer is $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
    (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt{3}}{2}"),  # nested braces
    (r"\boxed {x+1}", "x+1"),  # space before the brace
    (r"\boxed{\{1,2\}}", r"\{1,2\}"),  # escaped braces are not groups
    (r"\boxed{a \\} b}", r"a \\"),  # \\ is a line break, then } closes
    (r"\fbox{7}", "7"),
    (r"\boxed 5.", "5"),  # no braces, trailing full stop
    (r"$\boxed 42$ apples", "42"),
    (r"\boxed\pi", r"\pi"),
    (r"\boxed\frac{1}{2} is it", r"\frac{1}{2}"),
    (r"{\boxed 5}", "5"),
    (r"\boxed{7}. So we are done. Trailing text {with braces}.", "7"),
    (r"first \boxed{3}, then corrected to \boxed{4}", "4"),  # the last box counts
    (r"\boxed{3} and \fbox{2}", "2"),
    (r"\boxed{\boxed{5}}", "5"),
    (r"  \boxed{  12 }  ", "12"),
    ("no box here, the answer is 5", None),
    (r"\boxed{3} then truncated \boxed{\frac{1}{2}", None),  # last box never closed
    (r"\boxed{}", None),  # empty box is no answer
    (r"\boxed   ", None),
    (r"\boxedx{3}", None),  # another control word
    (r"\boxed{a\}", None),  # the only closing brace is escaped
]


@pytest.mark.parametrize(("text", "expected"), BOXED_CASES)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected
    assert has_boxed(text) == (expected is not None)


def test_last_boxed_rejects_non_text():
    with pytest.raises(ValueError, match="text"):
        last_boxed(None)  # type: ignore[arg-type]


def test_normalize_answer():
    assert normalize_answer("$\\frac12$") == "\\frac12"
    assert normalize_answer("\\(x\\)") == "x"
    assert normalize_answer("30°") == "30^\\circ"
    assert normalize_answer("1\\,000\\,000") == "1000000"
    assert normalize_answer("1.5e3") == "1.5\\times10^{3}"
    assert normalize_answer("-1.2E-04") == "-1.2\\times10^{-4}"
    assert normalize_answer("e") == "e"  # Euler's number stays
    assert normalize_answer("2e") == "2e"


# --------------------------------------------------------------------------------------------
# The answer table: (reference, boxed answer, what a careful grader says, note)
# A note starting with "KNOWN:" marks a pair where math-verify (with our pre-normalisation)
# disagrees with the grader; the test asserts the disagreement so that a math-verify upgrade
# that fixes it makes the test fail and the note gets removed.
# --------------------------------------------------------------------------------------------

ANSWER_TABLE = [
    # equal fractions, \frac vs /, \dfrac
    ("3/4", r"\frac{3}{4}", True, ""),
    (r"\frac{3}{4}", "3/4", True, ""),
    (r"\frac{3}{4}", r"\frac{6}{8}", True, "unsimplified but equal"),
    (r"\frac{3}{4}", r"\dfrac{3}{4}", True, ""),
    (r"\frac{3}{4}", r"\tfrac34", True, ""),
    (r"\frac{3}{4}", r"\frac{4}{3}", False, ""),
    (r"\frac{3}{4}", "3:4", True, "ratio notation, read as 3/4"),
    # decimals vs fractions
    (r"\frac{3}{4}", "0.75", True, ""),
    ("0.75", r"\frac{3}{4}", True, ""),
    (r"\frac{1}{3}", "0.3333333", True, "rounds to the same 6 digits"),
    (r"\frac{1}{3}", "0.333", False, "too coarse"),
    # negative numbers
    ("-7", "-7", True, ""),
    ("-7", "7", False, "sign flip"),
    (r"-\frac{1}{2}", r"\frac{-1}{2}", True, ""),
    (r"-\frac{1}{2}", "-0.5", True, ""),
    (r"-\frac{1}{2}", r"\frac{1}{2}", False, "sign flip"),
    # integers and their spellings
    ("42", "42", True, ""),
    ("42", "43", False, ""),
    ("42", "042", True, "leading zero"),
    ("42", "42.0", True, ""),
    ("1000", "1,000", True, "thousands separator"),
    ("1000", "1{,}000", True, ""),
    ("1000", r"1\,000", True, "thin space: pre-normalised"),
    ("1000000", "10^6", True, ""),
    # scientific notation
    ("1500", r"1.5\times 10^{3}", True, ""),
    ("1500", r"1.5\cdot10^3", True, ""),
    ("1500", "1.5e3", True, "e-notation: pre-normalised"),
    ("0.00012", r"1.2\times10^{-4}", True, ""),
    ("0.00012", "1.2e-4", True, "e-notation: pre-normalised"),
    (r"6.02\times10^{23}", "6.02e23", True, ""),
    (r"3\times10^{8}", "300000000", True, ""),
    # sqrt forms
    (r"2\sqrt{2}", r"\sqrt{8}", True, ""),
    (r"\frac{\sqrt{3}}{2}", r"\frac{1}{2}\sqrt{3}", True, ""),
    (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}", True, "rationalised or not"),
    (r"2\sqrt{3}", r"3\sqrt{2}", False, ""),
    (r"\sqrt{2}", "1.414", False, "exact answer expected; 3 decimals is not it"),
    # pi
    (r"2\pi", r"2\pi", True, ""),
    (r"\frac{\pi}{2}", r"\pi/2", True, ""),
    (r"\pi", "3.14", False, "exact answer expected"),
    (r"4\pi", r"4\pi \text{ cm}^2", True, "units dropped"),
    # percent
    (r"50\%", "50", True, ""),
    ("50", r"50\%", True, ""),
    (r"25\%", "0.25", True, ""),
    (r"12.5\%", "12.5", True, "non-integer percent: retried without the sign"),
    (r"12.5\%", "0.125", True, ""),
    ("50", r"5\%", False, ""),
    # degrees and units
    (r"30^\circ", "30", True, ""),
    ("30", r"30^{\circ}", True, ""),
    ("30", "30°", True, "Unicode degree sign: pre-normalised"),
    (r"90^\circ", "90 degrees", True, ""),
    ("45", r"\frac{\pi}{4}", False, "radians where degrees are asked"),
    ("10", r"10\text{ cm}", True, ""),
    (r"10\text{ cm}", "10", True, ""),
    ("5", r"5 \mbox{ meters}", True, ""),
    (r"\$12.50", "12.5", True, "currency"),
    ("12.50", r"\$12.50", True, ""),
    # intervals
    ("[1,2)", "[1,2)", True, ""),
    ("[1,2)", "(1,2]", False, "open/closed ends swapped"),
    ("[0,1]", "[0,1)", False, ""),
    (r"(-\infty, 3]", r"(-\infty,3]", True, ""),
    (r"(-\infty, 3]", r"x \le 3", True, "inequality for an interval: allow_set_relation_comp"),
    (r"x \in [2,5)", "[2,5)", True, ""),
    (r"(-\infty,-1)\cup(1,\infty)", r"(1,\infty)\cup(-\infty,-1)", True, "union order"),
    # sets and tuples
    (r"\{1,2,3\}", r"\{3,2,1\}", True, ""),
    ("1,2,3", "3, 1, 2", True, "list of solutions, any order"),
    ("2, -3", "-3, 2", True, ""),
    (r"\{1,2\}", r"\{1,2,3\}", False, ""),
    ("(3,4)", "(3,4)", True, ""),
    (r"(3, \frac{\pi}{2})", r"(3,\frac{\pi}{2})", True, "polar point"),
    ("(1,2)", "(2,1)", False, "ordered pair swapped"),
    # matrices and vectors
    (r"\begin{pmatrix}1\\2\end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}", True, ""),
    (r"\begin{pmatrix}1\\2\end{pmatrix}", r"\begin{pmatrix}2\\1\end{pmatrix}", False, ""),
    (r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", r"\begin{bmatrix}1&2\\3&4\end{bmatrix}", True, ""),
    (r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", r"\begin{pmatrix}1&3\\2&4\end{pmatrix}", False, ""),
    (r"\begin{pmatrix}\frac{1}{2}\\0\end{pmatrix}", r"\begin{pmatrix}0.5\\0\end{pmatrix}", True, ""),
    # text answers
    (r"\text{Monday}", "Monday", True, ""),
    (r"\text{Monday}", r"\text{monday}", True, "case"),
    (r"\text{Monday}", r"\text{Tuesday}", False, ""),
    (r"\text{Evelyn}", "Evelyn", True, ""),
    (r"\text{(C)}", "C", True, "multiple choice"),
    (r"\text{(C)}", "(C)", True, ""),
    (r"\text{(C)}", "D", False, ""),
    (r"\text{yes}", "no", False, ""),
    (r"\text{odd}", r"\text{even}", False, ""),
    (r"\text{even}", r"\textbf{even}", True, ""),
    # algebra
    ("x^2+2x+1", "(x+1)^2", True, ""),
    ("x^2+2x+1", "(x-1)^2", False, ""),
    ("2x+3", "3+2x", True, ""),
    (r"\frac{x}{2}", "x/2", True, ""),
    ("x=5", "5", True, ""),
    ("5", "x=5", True, ""),
    ("y=2x+3", "2x+3", True, ""),
    # infinity, complex numbers, functions
    (r"\infty", r"\infty", True, ""),
    (r"\infty", r"-\infty", False, ""),
    ("3+4i", "4i+3", True, ""),
    ("3+4i", "3-4i", False, ""),
    ("i", r"\sqrt{-1}", True, "KNOWN: a real-valued parse leaves sqrt(-1) unevaluated"),
    (r"\log_2 8", "3", True, ""),
    (r"\binom{5}{2}", "10", True, ""),
    ("5!", "120", True, ""),
    # malformed LaTeX inside a closed box
    ("1", r"\frac{1}", False, "missing argument"),
    ("2", "2^", False, "dangling operator"),
    ("5", r"\sqrt{}", False, ""),
    ("5", r"\left(5", False, "unmatched delimiter"),
]

# Whole responses: extraction and comparison together (malformed boxes live here).
RESPONSE_TABLE = [
    (r"Thus $\boxed{\frac{1}{2}}$.", "1/2", 1.0),
    (r"First \boxed{3}; correcting the error, \boxed{4}.", "4", 1.0),
    (r"First \boxed{3}; correcting the error, \boxed{4}.", "3", 0.0),
    (r"so it is \boxed{\frac{1}{2}", "1/2", 0.0),  # unclosed box: truncated response
    ("the answer is 5", "5", 0.0),  # the paper's reward needs a box
    (r"\boxed{5}}", "5", 1.0),  # a stray brace after the box is trailing text
    (r"\fbox{7}", "7", 1.0),
    (r"\boxed 42", "42", 1.0),
    (r"\boxed {x+1}", "1+x", 1.0),
    (r"\boxed{}", "5", 0.0),
    (r"\boxed{\{1,2\}}", r"\{2,1\}", 1.0),
    (r"\boxed{7}", 7, None),  # a non-text reference is a caller bug: ValueError
]


def test_answer_table_size():
    assert len(ANSWER_TABLE) >= 60
    assert len({(g, p) for g, p, _, _ in ANSWER_TABLE}) == len(ANSWER_TABLE)
    # both verdicts are well represented, so a grader saying always-yes fails
    assert sum(not e for _, _, e, _ in ANSWER_TABLE) >= 25


@needs_math_verify
@pytest.mark.parametrize(("gold", "pred", "expected", "note"), ANSWER_TABLE)
def test_answer_table(gold, pred, expected, note):
    got = answers_match(pred, gold)
    if note.startswith("KNOWN:"):
        assert got == (not expected), f"known disagreement fixed upstream? {note}"
    else:
        assert got == expected, note


@needs_math_verify
@pytest.mark.parametrize(("response", "gold", "expected"), RESPONSE_TABLE)
def test_response_table(response, gold, expected):
    if expected is None:
        with pytest.raises(ValueError, match="gold"):
            score_response(response, gold)
    else:
        assert score_response(response, gold) == expected


@needs_math_verify
def test_reference_given_with_its_box():
    assert answers_match("3/4", r"\boxed{\frac{3}{4}}")


# --------------------------------------------------------------------------------------------
# The worker pool: parallel scoring, a hard deadline, any thread
# --------------------------------------------------------------------------------------------

HOSTILE = [
    r"\boxed{9^{9^{9^{9^{9}}}}}",  # a power tower: sympy tries to evaluate it, in C
    r"\boxed{" + "{" * 40 + "1" + "}" * 40 + "}",  # nesting: the parser is exponential in depth
]

TIMEOUT = 2.0


@pytest.fixture(scope="module")
def scorer():
    with MathScorer(workers=2, timeout=TIMEOUT) as s:
        assert s.score_batch([r"\boxed{1}"], ["1"]) == [1.0]  # wait for the workers to start
        yield s


@needs_math_verify
def test_scorer_matches_in_process(scorer):
    rows = ANSWER_TABLE[:12] + ANSWER_TABLE[-12:]
    responses = [f"We find $\\boxed{{{p}}}$." for _, p, _, _ in rows]
    answers = [g for g, _, _, _ in rows]
    expected = [score_response(r, a) for r, a in zip(responses, answers, strict=True)]
    assert scorer.score_batch(responses, answers) == expected


@needs_math_verify
def test_hostile_answers_time_out(scorer):
    before = scorer.stats.timeouts
    start = time.monotonic()
    scores = scorer.score_batch(HOSTILE, ["1", "1"])  # one per worker, in parallel
    elapsed = time.monotonic() - start
    assert scores == [0.0, 0.0]
    assert scorer.stats.timeouts - before == 2
    # the deadline is hard: each call ends at TIMEOUT (small margin for a loaded machine)
    assert TIMEOUT <= elapsed < TIMEOUT + 2.0, elapsed
    # the pool recovers: the killed workers are replaced and score normally
    assert scorer.score_batch([r"\boxed{0.5}", *HOSTILE[:1]] * 2, ["1/2", "1"] * 2) == [
        1.0, 0.0, 1.0, 0.0
    ]


@needs_math_verify
def test_score_from_another_thread(scorer):
    out = {}

    def run():
        out["scores"] = scorer.score_batch([r"\boxed{3}", r"\boxed{4}"], ["3", "3"])

    t = threading.Thread(target=run)
    t.start()
    t.join(timeout=60)
    assert out["scores"] == [1.0, 0.0]
    future = scorer.submit_batch([r"\boxed{\frac{1}{2}}"], ["0.5"])
    assert future.result(timeout=60) == [1.0]


@needs_math_verify
def test_scorer_input_checks(scorer):
    with pytest.raises(ValueError, match="answers"):
        scorer.score_batch(["a", "b"], ["1"])
    assert scorer.score_batch([], []) == []
    with pytest.raises(ValueError, match="timeout"):
        MathScorer(workers=1, timeout=0)
    with pytest.raises(ValueError, match="workers"):
        MathScorer(workers=0)


def _raise(response: str, answer: str) -> float:
    raise RuntimeError("verifier bug")


def _die(response: str, answer: str) -> float:
    os._exit(3)


def test_pool_counts_errors_and_worker_deaths():
    with RewardPool(_raise, workers=1, timeout=5.0) as pool:
        assert pool.score_batch(["x", "y"], ["1", "2"]) == [0.0, 0.0]
        assert pool.stats.errors == 2 and pool.stats.restarts == 0
    with RewardPool(_die, workers=1, timeout=5.0) as pool:
        assert pool.score("x", "1") == 0.0
        assert pool.stats.errors == 1 and pool.stats.restarts == 1
    with pytest.raises(RuntimeError, match="after close"):
        pool.score("x", "1")


def _echo(response: str, answer: str) -> float:
    return float(response == answer)


_IMPORTED = []


def _slow_first_call(response: str, answer: str) -> float:
    """Like a verifier whose first call imports a heavy library."""
    if not _IMPORTED:
        time.sleep(1.5)
        _IMPORTED.append(True)
    return float(response == answer)


def test_pool_replaces_a_worker_killed_while_idle():
    with RewardPool(_echo, workers=2, timeout=5.0) as pool:
        assert pool.score_batch(["a", "b"], ["a", "x"]) == [1.0, 0.0]
        # One that has started and is idle now (the other may still be starting on a busy
        # machine; a worker killed during start-up is a different, fatal, case).
        victim = next(w for w in pool._workers if w.ready).process
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(timeout=5)
        assert pool.score_batch(["a", "b", "c"], ["a", "b", "x"]) == [1.0, 1.0, 0.0]
        assert pool.stats.restarts == 1 and pool.stats.errors == 0


def test_pool_warm_up_keeps_lazy_imports_out_of_the_deadline():
    with RewardPool(_slow_first_call, workers=1, timeout=1.0) as cold:
        assert cold.score("a", "a") == 0.0 and cold.stats.timeouts == 1  # the import timed out
    with RewardPool(_slow_first_call, workers=1, timeout=1.0, warm_up=("", "")) as warm:
        assert warm.score("a", "a") == 1.0 and warm.stats.timeouts == 0


# --------------------------------------------------------------------------------------------
# DAPO overlong penalty and format reward
# --------------------------------------------------------------------------------------------


def _dapo_reference(n: int, l_max: int, l_cache: int) -> float:
    # DAPO Eq. 13, written out case by case
    if n <= l_max - l_cache:
        return 0.0
    if n <= l_max:
        return ((l_max - l_cache) - n) / l_cache
    return -1.0


def test_overlong_penalty_matches_dapo():
    l_max, l_cache = 100, 20
    for n in [0, 50, 80, 81, 85, 90, 99, 100, 101, 500]:
        assert overlong_penalty(n, l_max, l_cache) == pytest.approx(
            _dapo_reference(n, l_max, l_cache), rel=1e-12, abs=1e-12
        )
    assert overlong_penalty(80, 100, 20) == 0.0
    assert overlong_penalty(90, 100, 20) == pytest.approx(-0.5)
    assert overlong_penalty(100, 100, 20) == pytest.approx(-1.0)
    assert overlong_penalty(90, 100, 20, factor=0.5) == pytest.approx(-0.25)
    assert overlong_penalty(150, 100, 20, factor=0.5) == pytest.approx(-0.5)
    assert overlong_penalties([80, 90, 120], 100, 20) == pytest.approx([0.0, -0.5, -1.0])


@pytest.mark.parametrize(
    ("args", "match"),
    [((-1, 100, 20), "length"), ((5, 0, 1), "max_length"), ((5, 100, 0), "buffer"),
     ((5, 100, 101), "buffer"), ((5, 100, 20, -1.0), "factor")],
)
def test_overlong_penalty_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        overlong_penalty(*args)


def test_format_reward():
    assert format_reward(r"so \boxed{12}") == 1.0
    assert format_reward(r"\boxed{wrong but present}") == 1.0
    assert format_reward("12") == 0.0
    assert format_reward(r"\boxed{12") == 0.0
