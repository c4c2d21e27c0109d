"""tool_choice "any" and "tool": the model's reply starts with a call, of an offered tool.

The output is made to begin with the family's call opener, then a tool name, then the text
that leads into the arguments, all through a logits processor over real generated tokens,
so the decoder and the output parser see them exactly as if the model had chosen them:

  hermes       ``<tool_call>\\n{"name": "`` NAME ``", "arguments":``
  qwen3_coder  ``<tool_call>\\n<function=`` NAME ``>``
  mistral      ``[TOOL_CALLS]`` NAME ``[ARGS]`` (tokenizers with an ``[ARGS]`` token), else
               ``[TOOL_CALLS][{"name": "`` NAME ``", "arguments":``
  llama3       ``{"name": "`` NAME ``", "parameters":``
  glm47        ``<tool_call>`` NAME ``\n``
  kimi_k2      ``<|tool_calls_section_begin|><|tool_call_begin|>functions.`` NAME
               ``:0<|tool_call_argument_begin|>``
  minimax_m2   ``<minimax:tool_call>\n<invoke name="`` NAME ``">``
  gemma4       ``<|tool_call>call:`` NAME ``{``

The opener is forced as its own canonical tokens. For the name, each step allows only the
tokens whose text continues one of the allowed ``NAME + lead-in`` strings ("tool": the one
tool, "any": every offered tool), so the model picks the tool and its own tokenization;
the choice ends when one string is complete. The arguments are then sampled freely: the
model writes them and the parser checks them against the schema as usual (a model that
writes no valid arguments still ends up with its raw text, as with tool_choice auto).
With ``disable_parallel_tool_use`` the call's end is tracked (its JSON closes, for XML
``</function>`` outside a parameter, else the family's end marker) and EOS is forced there.

Not enforced (logged as ``engine.tool_choice.unenforced``): family "none" (no call syntax),
the families whose head depends on the model more than the family (pythonic: LFM2 markers or
Llama 4's bare list; deepseek: the V3 and V3.1 forms; kimi_k3, longcat, function_gemma,
minicpm5, muse_spark: no head written yet), and an assistant prefill (the reply continues the client's text). When the prompt ends
inside an opened think block, the opener first closes it: forced tool use does not think,
as in the real API.
"""

from __future__ import annotations

from dataclasses import dataclass

from anyclaude import errors
from anyclaude.logs import get_logger

from anyclaude.services.engine.mlx.forcing import encode_exact
from anyclaude.services.engine.parsing.schema_repair import resolve_tool
from anyclaude.services.engine.parsing.toolcall_json import JsonScanner
from anyclaude.services.engine.parsing.toolcall_xml import FUNC_CLOSE, PARAM_CLOSE, PARAM_OPEN

log = get_logger()

FORCING = ("any", "tool")


@dataclass(frozen=True)
class Plan:
    opener: str       # forced as its canonical tokens
    lead_in: str      # follows the name; the name choice ends with it
    end: str          # how the call's end is found: "json", "xml", or the marker ending it
    close: str = ""   # forced after the call's end when parallel calls are disabled


_MARKER_PLANS = {
    "glm47": Plan("<tool_call>", "\n", "</tool_call>"),
    "kimi_k2": Plan("<|tool_calls_section_begin|><|tool_call_begin|>functions.",
                    ":0<|tool_call_argument_begin|>", "json",
                    close="<|tool_call_end|><|tool_calls_section_end|>"),
    "minimax_m2": Plan('<minimax:tool_call>\n<invoke name="', '">', "</invoke>",
                       close="\n</minimax:tool_call>"),
    "gemma4": Plan("<|tool_call>call:", "{", "<tool_call|>"),
}


def plan_for(family: str, vocab_texts, think_end: str | None = None) -> Plan | None:
    """The family's call head, or None where no call syntax exists. ``vocab_texts`` is any
    container of the tokenizer's token texts (a mistral ``[ARGS]`` token picks that form)."""
    if family == "hermes":
        plan = Plan('<tool_call>\n{"name": "', '", "arguments":', "json")
    elif family == "qwen3_coder":
        plan = Plan("<tool_call>\n<function=", ">", "xml")
    elif family == "mistral" and "[ARGS]" in vocab_texts:
        plan = Plan("[TOOL_CALLS]", "[ARGS]", "json")
    elif family == "mistral":
        plan = Plan('[TOOL_CALLS][{"name": "', '", "arguments":', "json", close="]")
    elif family == "llama3":
        plan = Plan('{"name": "', '", "parameters":', "json")
    elif family in _MARKER_PLANS:
        plan = _MARKER_PLANS[family]
    else:
        return None
    if think_end:
        plan = Plan(think_end + "\n\n" + plan.opener, plan.lead_in, plan.end, plan.close)
    return plan


class Vocab:
    """Each token id's text as it reads after other text (decoded behind an anchor token,
    so SentencePiece word-start spaces are kept), and the ids of each text."""

    def __init__(self, tokenizer):
        anchor = list(tokenizer.encode("a", add_special_tokens=False))[-1:]
        opts = dict(skip_special_tokens=False, clean_up_tokenization_spaces=False)
        base = tokenizer.decode(anchor, **opts)
        texts = tokenizer.batch_decode([anchor + [i] for i in range(len(tokenizer))], **opts)
        self.text = [t[len(base):] if t.startswith(base) else "" for t in texts]
        self.ids: dict[str, list[int]] = {}
        for i, text in enumerate(self.text):
            if text and "\ufffd" not in text:   # a piece of a multi-byte character
                self.ids.setdefault(text, []).append(i)
        self.longest = max(map(len, self.ids), default=1)

    def __contains__(self, text: str) -> bool:
        return text in self.ids


_VOCABS: dict[int, tuple[object, Vocab]] = {}


def vocab_of(tokenizer) -> Vocab:
    """Built once per tokenizer (a few hundred ms for a 150K vocabulary)."""
    held = _VOCABS.get(id(tokenizer))
    if held is None or held[0] is not tokenizer:
        held = (tokenizer, Vocab(tokenizer))
        _VOCABS[id(tokenizer)] = held
        while len(_VOCABS) > 4:
            _VOCABS.pop(next(iter(_VOCABS)))
    return held[1]


def processors(core, request: dict, prompt) -> list | None:
    """The logits processors that enforce the request's tool_choice on ``core``
    (an EngineCore) for ``prompt`` (its template.Rendered), or None when there is nothing
    to enforce."""
    choice = request.get("tool_choice") or {}
    kind = choice.get("type")
    if kind not in FORCING:
        return None
    tools = [t for t in request.get("tools") or [] if isinstance(t.get("name"), str)]
    if kind == "tool":
        tool = resolve_tool(choice.get("name"), tools)
        if tool is None:
            raise errors.InvalidRequest(
                f"tool_choice.name: no tool named {choice.get('name')!r} among the request's "
                f"tools ({', '.join(t['name'] for t in tools) or 'none'})")
        names = [tool["name"]]
    else:
        names = [t["name"] for t in tools]
        if not names:
            raise errors.InvalidRequest("tool_choice: type 'any' needs at least one tool")
    vocab = vocab_of(core.tokenizer)
    plan = plan_for(core.family, vocab,
                    core.renderer.think_end if prompt.starts_in_thinking else None)
    why = (f"no call head is forced for the tool-call family {core.family!r}" if plan is None
           else "the reply continues an assistant prefill" if prompt.prefill else None)
    if why is not None:
        log.warning("engine.tool_choice.unenforced", model=core.model_id, tool_choice=kind,
                    family=core.family, reason=why)
        return None
    single = bool(choice.get("disable_parallel_tool_use"))
    log.info("engine.tool_choice.enforced", model=core.model_id, tool_choice=kind,
             family=core.family, tools=len(names), single_call=single)
    return [ForcedCall(plan, names, vocab, core.tokenizer, core.eos_id, single)]


class ForcedCall:
    """Logits processor for ``stream_generate`` (one per generation): the opener's tokens,
    then the tokens of a ``NAME + lead-in`` (one of ``names``), then free sampling; with
    ``single``, EOS (after ``plan.close``) once the call is complete."""

    def __init__(self, plan: Plan, names: list[str], vocab: Vocab, tokenizer, eos_id: int,
                 single: bool):
        self.plan, self.vocab, self.tokenizer = plan, vocab, tokenizer
        self.eos_id, self.single = eos_id, single
        self.targets = [name + plan.lead_in for name in names]
        self.queue = encode_exact(tokenizer, plan.opener)
        self.after_queue = "name"
        self.phase = "queue"
        self.chosen = ""          # text picked so far in the name phase
        self.text = ""            # the call's text, tracked to find its end (single only)
        self.pending = False      # the last step sampled a token this processor must read
        self.scanner: JsonScanner | None = None
        self.seen = 0             # where the search for an XML end goes on

    def __call__(self, tokens, logits):
        if self.pending:
            self.pending = False
            token = int(tokens[-1].item())
            self._took(self.vocab.text[token] if token < len(self.vocab.text) else "")
        if self.phase == "queue":
            target = self.queue.pop(0) if self.queue else self.eos_id
            if not self.queue:
                self.phase = self.after_queue
            return _only([target], logits)
        if self.phase == "name":
            return self._name(logits)
        self.pending = self.phase == "track"
        return logits

    def _name(self, logits):
        left = [t[len(self.chosen):] for t in self.targets if t.startswith(self.chosen)]
        allowed = {i for rest in left for k in range(1, min(len(rest), self.vocab.longest) + 1)
                   for i in self.vocab.ids.get(rest[:k], ())}
        if not allowed:   # no token spells the next character alone: force the first name
            self._chosen(self.chosen + left[0], forced=encode_exact(self.tokenizer, left[0]))
            return self(None, logits)
        self.pending = True
        return _only(sorted(allowed), logits)

    def _took(self, text: str) -> None:
        if self.phase == "name":
            if self.chosen + text in self.targets:
                self._chosen(self.chosen + text)
            else:
                self.chosen += text
        elif self.phase == "track" and self._ended(text):
            self.queue = encode_exact(self.tokenizer, self.plan.close) if self.plan.close else []
            self.phase, self.after_queue = "queue", "queue"

    def _chosen(self, target: str, forced: list[int] | None = None) -> None:
        self.chosen = target
        self.text = self.plan.opener + target
        after = "track" if self.single else "free"
        if forced:
            self.queue, self.phase, self.after_queue = forced, "queue", after
        else:
            self.phase = after
        if self.single and self.plan.end == "json":
            at = self.plan.opener.find("{")
            self.scanner = JsonScanner(at if at >= 0 else len(self.text))
        self.seen = len(self.text)

    def _ended(self, text: str) -> bool:
        self.text += text
        if self.scanner is not None:
            return self.scanner.run(self.text)[0] == "done"
        if self.plan.end != "xml":   # the family's end marker
            at = self.text.find(self.plan.end, self.seen)
            self.seen = max(self.seen, len(self.text) - len(self.plan.end))
            return at >= 0
        while True:
            at = self.text.find(FUNC_CLOSE, self.seen)
            if at < 0:
                self.seen = max(self.seen, len(self.text) - len(FUNC_CLOSE))
                return False
            self.seen = at + 1
            if self.text.rfind(PARAM_OPEN, 0, at) <= self.text.rfind(PARAM_CLOSE, 0, at):
                return True   # not inside an open parameter value


def _only(ids: list[int], logits):
    """Every token but ``ids`` gets -inf. The result depends on ``logits``, so MLX keeps
    evaluating the forward pass as it goes (see forcing.ForcedText)."""
    import mlx.core as mx
    import numpy as np

    keep = np.zeros(logits.shape[-1], dtype=bool)
    keep[[i for i in ids if i < keep.shape[0]]] = True
    return mx.where(mx.array(keep), logits, float("-inf")).astype(logits.dtype)
