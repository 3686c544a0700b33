"""Dense rewards from a reward function: validation, placement on tokens, and use in training."""

from __future__ import annotations

import pytest
import torch

from entropyrl.rewards.result import RewardResult, check_token_rewards, to_result
from entropyrl.rewards.token_rewards import place_token_rewards, token_of_char

EOS = 0


@pytest.fixture(scope="module")
def bpe():
    """A byte-level BPE tokenizer (multi-byte characters span several tokens), built here."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(["the cat sat on the mat; 12+34=46 #46"] * 10, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>")
    assert tok.eos_token_id == EOS
    return tok


def _decoder(tok):
    return lambda ids: tok.decode(ids, skip_special_tokens=True)


def _batch(tok, texts, eos=(True,)):
    """``[B, R]`` response ids and mask of ``texts`` (with an end token where ``eos``)."""
    rows = [tok(t, add_special_tokens=False)["input_ids"] + ([EOS] if e else [])
            for t, e in zip(texts, eos * len(texts), strict=False)]
    width = max(len(r) for r in rows) + 2
    ids = torch.full((len(rows), width), EOS)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = True
    return ids, mask


def test_pairs_are_checked():
    assert check_token_rewards([(0, 1), [3, -0.5]]) == ((0, 1.0), (3, -0.5))
    assert check_token_rewards(()) == ()
    for bad in ["ab", [(0,)], [(0.5, 1.0)], [(True, 1.0)], [(0, float("nan"))], [(0, "1")], 3]:
        with pytest.raises(TypeError, match="token_rewards must be a list"):
            check_token_rewards(bad)


def test_a_reward_function_returns_dense_rewards_in_its_dict():
    got = to_result({"score": 1, "token_rewards": [(2, 0.5)], "source": "x"})
    assert got == RewardResult(1.0, True, {"source": "x"}, ((2, 0.5),))
    assert to_result(RewardResult(0.0, False, token_rewards=[(1, 2)])).token_rewards == ((1, 2.0),)
    with pytest.raises(TypeError, match="token_rewards"):
        to_result({"score": 1.0, "token_rewards": 0.5})


def test_every_character_maps_to_the_token_that_completes_it(bpe):
    text = "cat → é日本 sat"
    ids = bpe(text, add_special_tokens=False)["input_ids"]
    decode = _decoder(bpe)
    assert decode(ids) == text and len(ids) > len(text.split())  # some chars span tokens
    prefixes = [decode(ids[: k + 1]) for k in range(len(ids))]
    split = 0
    for c in range(len(text)):
        # Reference: a linear scan for the first prefix that holds characters 0..c exactly.
        want = next(k for k, p in enumerate(prefixes) if p[: c + 1] == text[: c + 1])
        assert token_of_char(ids, c, decode, text) == want
        split += want > 0 and len(prefixes[want - 1]) > c  # its first bytes came earlier
    assert split >= 3  # →, é and the CJK characters span several tokens


def test_rewards_land_on_their_tokens_and_add_up(bpe):
    texts = ["12+34=46 #46", "the cat"]
    ids, mask = _batch(bpe, texts)
    decode = _decoder(bpe)
    pairs = [[(0, 1.0), (-1, 2.0), (len(texts[0]), 4.0), (-1, 0.5)], None]
    got = place_token_rewards(pairs, ids, mask, texts, eos_id=EOS, decode=decode)
    assert got is not None and got.shape == ids.shape and got.dtype == torch.float32
    n = int(mask[0].sum())
    last_char = token_of_char(ids[0, : n - 1].tolist(), len(texts[0]) - 1, decode, texts[0])
    want = torch.zeros(ids.shape[1])
    want[0] += 1.0
    want[last_char] += 2.5
    want[n - 1] += 4.0  # the end of the text is the end token
    torch.testing.assert_close(got[0], want, rtol=0, atol=0)
    assert not got[1].any() and not got[0, n:].any()


def test_a_response_without_end_token_takes_end_rewards_on_its_last_token(bpe):
    texts = ["the cat", ""]
    ids, mask = _batch(bpe, texts, eos=(False,))
    mask[1, 0] = True  # an empty text: one token that decodes to nothing
    ids[1, 0] = EOS
    got = place_token_rewards([[(7, 1.0)], [(0, 3.0)]], ids, mask, texts, eos_id=EOS,
                              decode=_decoder(bpe))
    assert got is not None
    assert got[0, int(mask[0].sum()) - 1] == 1.0 and got[1, 0] == 3.0 and got.sum() == 4.0


def test_no_dense_rewards_means_none_and_bad_indices_are_errors(bpe):
    texts = ["the cat"]
    ids, mask = _batch(bpe, texts)
    decode = _decoder(bpe)
    assert place_token_rewards([()], ids, mask, texts, eos_id=EOS, decode=decode) is None
    for bad in (8, -8):
        with pytest.raises(ValueError, match=f"character index {bad} is outside the 7-char"):
            place_token_rewards([[(bad, 1.0)]], ids, mask, texts, eos_id=EOS, decode=decode)
    with pytest.raises(ValueError, match="not the decoding of its tokens"):
        place_token_rewards([[(0, 1.0)]], ids, mask, ["the dog"], eos_id=EOS, decode=decode)


REWARD = '''
def _solved(text, answer):
    return text.rpartition("#")[2].strip() == str(answer)

def end_bonus(completions, answer, **columns):
    """The outcome, plus a length bonus as a dense reward on the response's last token."""
    return [{"score": float(_solved(t, a)), "solved": _solved(t, a),
             "token_rewards": [(len(t), 0.25 * len(t))]} for t, a in zip(completions, answer)]

def shifted(completions, answer, **columns):
    """The outcome plus the length bonus in the score itself."""
    return [{"score": float(_solved(t, a)) + 0.25 * len(t), "solved": _solved(t, a)}
            for t, a in zip(completions, answer)]

def past_the_end(completions, **columns):
    return [{"score": 0.0, "token_rewards": [(len(t) + 1, 1.0)]} for t in completions]
'''


def _run(tmp_path, micro_model_dir, fn, *extra):
    from entropyrl.config import load_config
    from entropyrl.train import train
    from entropyrl.train.metrics import read_metrics

    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "dense_reward.py"
    path.write_text(REWARD)
    cfg = load_config("testbed/grpo", [
        f"model.path={micro_model_dir}", "model.device=cpu", "steps=2", "rollout.n_prompts=4",
        "rollout.group_size=2", "rollout.max_new_tokens=6", "update.mini_batch_size=8",
        "update.micro_batch_size=4", "eval.every=0", "progress=false", "checkpoint_every=0",
        "data.testbed.train_size=16", "data.testbed.val_size=4",
        f"reward.fn={path}:{fn}", "reward.workers=1", *extra])
    out = train(cfg, tmp_path / fn)
    return read_metrics(out / "metrics.jsonl"), out


def test_reinforce_pp_takes_an_end_reward_as_part_of_the_return(tmp_path, micro_model_dir):
    """A dense reward on the last token is, for REINFORCE++ returns, part of the score."""
    dense, _ = _run(tmp_path, micro_model_dir, "end_bonus", "algorithm.advantage=reinforce_pp")
    shifted, _ = _run(tmp_path, micro_model_dir, "shifted", "algorithm.advantage=reinforce_pp")
    assert all(r["train/token_reward_sum"] > 0 for r in dense)
    assert all("train/token_reward_sum" not in r for r in shifted)
    for a, b in zip(dense, shifted, strict=True):
        # Groups count as mixed by their scores alone, which differ between the two rewards.
        same = [k for k in a if k in b and k != "train/mixed_group_frac"
                and not k.startswith(("time/", "train/reward", "reward/"))]
        assert len(same) > 20
        assert {k: a[k] for k in same} == {k: b[k] for k in same}


def test_an_estimator_without_token_rewards_refuses_them(tmp_path, micro_model_dir):
    from entropyrl.errors import UserError

    with pytest.raises(UserError, match=r"algorithm\.advantage=grpo takes one score per "
                                        r"response.*reinforce_pp, rloo, prime"):
        _run(tmp_path, micro_model_dir, "end_bonus")


def test_a_misplaced_dense_reward_stops_the_run_with_the_fix(tmp_path, micro_model_dir):
    from entropyrl.errors import UserError

    with pytest.raises(UserError, match=r"token_rewards could not be placed: token_rewards: "
                                        r"character index \d+ is outside.*Fix the reward"):
        _run(tmp_path, micro_model_dir, "past_the_end", "algorithm.advantage=rloo")


def test_rloo_combines_dense_and_outcome_rewards_as_prime_does():
    from types import SimpleNamespace

    from entropyrl.config import load_config
    from entropyrl.prime import prime_advantages
    from entropyrl.rollout import Rollout
    from entropyrl.train.collect import Collected
    from entropyrl.train.step import step_advantages

    roll = Rollout.from_token_lists([[1, 2]] * 4, [[3, 4, EOS], [5, EOS], [3, 3, 3], [4, EOS]],
                                    texts=["a", "b", "c", "d"], group_ids=[0, 0, 1, 1],
                                    eos_id=EOS, pad_id=EOS)
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0])
    dense = torch.tensor([[0.1, 0.0, 0.3], [0.0, -0.2, 0.0], [0.5, 0.0, 0.0], [0.0, 0.0, 0.0]])
    cfg = load_config("testbed/grpo", ["algorithm.advantage=rloo", "algorithm.gamma=0.9"])
    run = SimpleNamespace(cfg=cfg, prm=None)
    got = Collected(roll, scores, scores > 0, {}, dense)
    want = prime_advantages(dense, scores, roll.group_ids, roll.response_mask, gamma=0.9)
    adv = step_advantages(run, got, None, 1, {})  # type: ignore[arg-type]
    torch.testing.assert_close(adv, want.token_advantages, rtol=0, atol=0)
    plain = step_advantages(run, got._replace(token_rewards=None), None, 1, {})  # type: ignore
    assert not torch.equal(adv, plain)


def test_prime_adds_the_dense_rewards_to_its_process_rewards(tmp_path, micro_model_dir):
    """A frozen PRM gives zero process rewards: PRIME with dense rewards is then RLOO's run."""
    prime, _ = _run(tmp_path, micro_model_dir, "end_bonus", "algorithm.advantage=prime",
                    "prime.update=none", "name=prime")
    rloo, _ = _run(tmp_path / "r", micro_model_dir, "end_bonus", "algorithm.advantage=rloo")
    for a, b in zip(prime, rloo, strict=True):
        assert a["prime/token_reward_abs_mean"] == 0.0
        keys = [k for k in b if k.startswith(("train/", "dyn/", "loss/"))]
        assert keys and all(a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-7) for k in keys)
