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
