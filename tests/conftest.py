import os

import pytest
import torch

# Tests run on CPU with a fixed thread count so that float results are reproducible.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def micro_model_dir(tmp_path_factory):
    """A freshly built micro Qwen2 model + the testbed tokenizer, saved in HF format."""
    from transformers import Qwen2ForCausalLM

    from entropyrl import testbed

    path = tmp_path_factory.mktemp("micro_model")
    tokenizer = testbed.build_tokenizer()
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(testbed.micro_config(len(tokenizer)))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def varied_reward(monkeypatch):
    """The micro model never solves a task; reward a '1' in the response to get mixed groups.

    A module that trains on every test uses it with
    ``pytestmark = pytest.mark.usefixtures("varied_reward")``.
    """
    import entropyrl.tasks as tasks
    from entropyrl.rewards.result import full_credit

    real = tasks.load_tasks

    def load(data, reward, tokenizer=None):
        ts = real(data, reward, tokenizer)
        return tasks.TaskSet(ts.train, ts.val,
                             lambda texts, rows: full_credit([float("1" in t) for t in texts]))

    monkeypatch.setattr("entropyrl.train.setup.load_tasks", load)
