r"""Prompt templates: from a raw question to the text given to the model.

Templates (a name below, or any string containing ``{question}``):

* ``paper``: the question, then the instruction to reason and put the final answer in
  ``\boxed{}``, which the paper's reward reads (PAPER.md §4). Meant as the user message of a
  chat template.
* ``plain``: ``Question: ...`` + the same instruction + ``Answer:``, a completion-style prompt
  for a base model or a tokenizer without a chat template.
* ``raw``: the question unchanged (for data whose questions already carry an instruction).

Only the literal ``{question}`` is substituted (``str.format`` would choke on the braces of
LaTeX questions and of ``\boxed{}``).
"""

from __future__ import annotations

from typing import Any

from entropyrl.errors import UserError

PAPER_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

TEMPLATES: dict[str, str] = {
    "paper": "{question}\n" + PAPER_INSTRUCTION,
    "plain": "Question: {question}\n" + PAPER_INSTRUCTION + "\nAnswer:",
    "raw": "{question}",
}


def format_prompt(question: str, template: str = "paper") -> str:
    """Fill a template (a name in :data:`TEMPLATES` or a string with ``{question}``)."""
    text = TEMPLATES.get(template, template)
    if "{question}" not in text:
        raise UserError(
            f"prompt template {template!r}: expected one of {sorted(TEMPLATES)} "
            "or a template string containing {question}."
        )
    return text.replace("{question}", question)


def has_chat_template(tokenizer: Any) -> bool:
    """True when ``tokenizer`` carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(
    question: str,
    template: str = "paper",
    tokenizer: Any = None,
    *,
    system: str | None = None,
    fallback: str = "plain",
) -> str:
    """The model's input text for one question.

    Args:
        question: the raw problem text.
        template: template for the text of the user message (or of the whole prompt without a
            chat template).
        tokenizer: when given and it has a chat template, the templated text becomes the user
            message of ``tokenizer.apply_chat_template(messages, tokenize=False,
            add_generation_prompt=True)``; when given without one, the ``fallback`` template
            is used instead (a base-model tokenizer). None: the template alone.
        system: optional system message (chat template only).
        fallback: template used when ``tokenizer`` has no chat template.

    Returns:
        The prompt string.
    """
    if tokenizer is None:
        return format_prompt(question, template)
    if not has_chat_template(tokenizer):
        return format_prompt(question, fallback)
    messages = [{"role": "user", "content": format_prompt(question, template)}]
    if system:
        messages.insert(0, {"role": "system", "content": system})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return str(text)
