"""Generation one token at a time, with the loop in the open: score, shape, pick, append, repeat.

A `Stepper` keeps the model's KV cache between steps, so a step costs one forward pass of one token.
Each step records the raw and the shaped distribution (transformers' own `LogitsProcessor`s, in the
order `generate` applies them), the chosen token with how and at which rank it was chosen, and the
attention of the new token over every earlier token (encoder-decoders: also over the source).

Steps can be undone to any earlier point; the continuation that was undone stays as a branch.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from transformers import DynamicCache, EncoderDecoderCache, LogitsProcessorList

from explorer.analyses.tokens import display_tokens
from explorer.errors import InputError
from explorer.models.anatomy import input_device
from explorer.runs import hooked
from explorer.runs.capture import layer_windows

TOP = 10  # candidates kept per step for display


@dataclass(frozen=True)
class Settings:
    """How a step picks its token. `seed` None: greedy (argmax of the shaped distribution)."""

    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None

    def check(self) -> None:
        if not self.temperature > 0:
            raise InputError("Temperature must be above 0 (use greedy for the most likely token).")
        if self.top_k < 0:
            raise InputError("top-k must be 0 (off) or more.")
        if not 0 < self.top_p <= 1:
            raise InputError("top-p must be in (0, 1].")
        if not self.repetition_penalty > 0:
            raise InputError("The repetition penalty must be above 0 (1 is off).")

    def generation_config(self, model, max_length: int):
        """The model's own generation config with these settings, as generate() would use it. Sampling
        is on so that temperature, top-k and top-p are applied: the page shows their effect in greedy
        mode too (they never change which token is the most likely)."""
        config = copy.deepcopy(model.generation_config)
        config.update(
            do_sample=True, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
            repetition_penalty=self.repetition_penalty, max_length=max_length, max_new_tokens=None,
            num_beams=1,
        )  # fmt: skip
        return config


@dataclass(frozen=True)
class Candidate:
    token_id: int
    token: str
    prob: float  # from the raw logits
    prob_processed: float  # after the settings' processors


@dataclass(frozen=True, eq=False)  # it holds arrays: compare steps by identity or by token ids
class Step:
    index: int  # 0 for the first generated token
    token_id: int
    token: str
    prob: float
    prob_processed: float
    rank: int  # 1 = the most likely token under the raw logits
    how: str  # greedy | sampled | picked
    seed: int | None
    settings: Settings
    top: tuple[Candidate, ...]  # the TOP most likely under the raw logits
    attention: np.ndarray  # [layer, head, k]: the new token's attention over every position up to it
    cross_attention: np.ndarray | None = None  # [layer, head, src]


@dataclass(frozen=True)
class Branch:
    """A continuation that was undone: `steps`, which followed the `prefix` of generated tokens there was
    when it was undone (the current path may have changed since: a branch belongs to its own prefix)."""

    prefix: tuple[Step, ...]
    steps: tuple[Step, ...]

    @property
    def at(self) -> int:
        """The number of generated tokens it was undone after."""
        return len(self.prefix)

    @property
    def path(self) -> tuple[Step, ...]:
        return self.prefix + self.steps

    def fork(self, current: Sequence[Step]) -> int:
        """Where this branch leaves `current`: the number of generated tokens they share from the start."""
        n = 0
        for mine, theirs in zip(self.path, current):
            if mine.token_id != theirs.token_id:
                break
            n += 1
        return n


@dataclass
class _State:
    logits: torch.Tensor  # [vocab] raw logits for the next token
    cache: object


@dataclass
class Stepper:
    """One user's generation on a shared model: create with `Stepper.start`, then `step`, `undo`."""

    loaded: object
    prompt_ids: list[int]
    prompt_tokens: list[str]
    source_ids: list[int] | None = None
    source_tokens: list[str] | None = None
    steps: list[Step] = field(default_factory=list)
    branches: list[Branch] = field(default_factory=list)
    finished: str | None = None  # why generation stopped (end-of-sequence, length limit)
    steer: object = None  # explorer.analyses.steering.Steer: added to the residual stream at every pass
    _state: _State | None = None
    _first_logits: torch.Tensor | None = None
    _encoder_outputs: object = None

    @classmethod
    def start(
        cls, loaded, prompt: str, chat: bool = False, source: str | None = None, steer: object = None
    ) -> "Stepper":
        """Reads the prompt (or, for encoder-decoders, the source) and computes the first distribution;
        with `steer`, every pass of the model adds its vector (explorer.analyses.steering)."""
        family = loaded.card.family
        if family == "encoder":
            raise InputError(
                f"{loaded.card.name} is an encoder: it reads text but has no way to write it. Pick a decoder "
                "(SmolLM2, Gemma) or an encoder-decoder to step through generation."
            )
        tok = loaded.tokenizer
        if family == "encoder-decoder":
            if not source or not source.strip():
                raise InputError("Type a source text: the encoder reads it, the decoder writes from it.")
            source_ids = tok(source)["input_ids"]
            prompt_ids = hooked.decoder_prefix(loaded.model, tok, prompt)
            me = cls(
                loaded,
                prompt_ids,
                display_tokens(tok, prompt_ids),
                source_ids,
                display_tokens(tok, source_ids),
            )
        else:
            if not prompt or not prompt.strip():
                raise InputError(
                    "The prompt is empty: type the beginning of a text for the model to continue."
                )
            ids = tok(templated(loaded, prompt) if chat else prompt, add_special_tokens=not chat)["input_ids"]
            me = cls(loaded, ids, display_tokens(tok, ids))
        me.steer = steer
        me._check_room(len(me.prompt_ids) + 1)
        me._prefill()
        return me

    # the sequence ---------------------------------------------------------------------------
    @property
    def ids(self) -> list[int]:
        return self.prompt_ids + [s.token_id for s in self.steps]

    @property
    def tokens(self) -> list[str]:
        return self.prompt_tokens + [s.token for s in self.steps]

    def text(self) -> str:
        return self.loaded.tokenizer.decode([s.token_id for s in self.steps])

    # one step -------------------------------------------------------------------------------
    def distribution(self, settings: Settings) -> tuple[torch.Tensor, torch.Tensor]:
        """The next token's probabilities, raw and shaped by `settings`: two [vocab] tensors."""
        raw = self._state.logits.float()
        shaped = self.processors(settings)(torch.tensor([self.ids]), raw[None].clone())[0]
        return torch.softmax(raw, -1), torch.softmax(shaped, -1)

    def processors(self, settings: Settings) -> LogitsProcessorList:
        """transformers' own processors for these settings and this model, built by the code generate()
        uses: the repetition penalty, temperature, top-k and top-p, plus whatever the checkpoint's
        generation config adds (forced first or last tokens, banned n-grams ...)."""
        settings.check()
        model = self.loaded.model
        limit = self.loaded.card.context_length or 10**6
        config = settings.generation_config(model, max_length=limit)
        model._prepare_special_tokens(config, kwargs_has_attention_mask=True, device="cpu")
        source = self.source_ids if self.source_ids is not None else self.prompt_ids
        return model._get_logits_processor(
            generation_config=config, input_ids_seq_length=len(self.prompt_ids),
            encoder_input_ids=torch.tensor([source]), logits_processor=LogitsProcessorList(), device="cpu",
            model_kwargs={},
        )  # fmt: skip

    def extra_rules(self, settings: Settings) -> list[str]:
        """Processors the checkpoint's generation config adds beyond the four settings."""
        own = {
            "RepetitionPenaltyLogitsProcessor",
            "TemperatureLogitsWarper",
            "TopKLogitsWarper",
            "TopPLogitsWarper",
        }
        return [type(p).__name__ for p in self.processors(settings) if type(p).__name__ not in own]

    def candidates(self, settings: Settings, k: int = TOP) -> list[Candidate]:
        """The k most likely next tokens under the raw logits, with their shaped probabilities too."""
        probs, shaped = self.distribution(settings)
        return self._top(probs, shaped, k)

    def _top(self, probs: torch.Tensor, shaped: torch.Tensor, k: int) -> list[Candidate]:
        top_p, top_i = probs.topk(min(k, probs.shape[0]))
        words = display_tokens(self.loaded.tokenizer, top_i.tolist())
        return [
            Candidate(int(i), w, float(p), float(shaped[i]))
            for i, p, w in zip(top_i.tolist(), top_p.tolist(), words)
        ]

    def step(self, settings: Settings, pick: int | None = None) -> Step:
        """Chooses the next token (greedy when `settings.seed` is None, else sampled with a seed derived
        from it and the step's index, or `pick` as the user forces it), appends it and runs it."""
        if self.finished:
            raise InputError(self.finished)
        self._check_room(len(self.ids) + 1)
        probs, shaped = self.distribution(settings)
        seed = None
        if pick is not None:
            if not 0 <= pick < probs.shape[0]:
                raise InputError(f"Token id {pick} is outside the vocabulary (0-{probs.shape[0] - 1}).")
            token_id, how = int(pick), "picked"
        elif settings.seed is None:
            token_id, how = int(shaped.argmax()), "greedy"
        else:
            seed = settings.seed * 100_003 + len(self.steps)  # one stream per step: undo and redo agree
            gen = torch.Generator().manual_seed(seed)
            token_id, how = int(torch.multinomial(shaped, 1, generator=gen)), "sampled"
        rank = int((probs > probs[token_id]).sum()) + 1
        top = tuple(self._top(probs, shaped, TOP))
        word = display_tokens(self.loaded.tokenizer, [token_id])[0]
        attention, cross = self._advance(token_id)
        step = Step(
            index=len(self.steps), token_id=token_id, token=word, prob=float(probs[token_id]),
            prob_processed=float(shaped[token_id]), rank=rank, how=how, seed=seed, settings=settings, top=top,
            attention=attention, cross_attention=cross,
        )  # fmt: skip
        self.steps.append(step)
        self.finished = self._stop_reason(token_id)
        return step

    def undo(self, to: int) -> None:
        """Back to the state after `to` generated tokens (0: only the prompt); what is removed is kept
        as a branch."""
        if not 0 <= to <= len(self.steps):
            raise InputError(f"There is no step {to} to go back to (0-{len(self.steps)}).")
        if to == len(self.steps):
            return
        branch = Branch(tuple(self.steps[:to]), tuple(self.steps[to:]))
        ids = [s.token_id for s in branch.path]
        if not any([s.token_id for s in b.path] == ids for b in self.branches):
            self.branches.append(branch)
        self.steps = self.steps[:to]
        self.finished = None
        with self.loaded.lock, torch.inference_mode():
            if to == 0:
                self._prefill()
                return
            cache = self._state.cache
            try:
                cache.crop(-(len(branch.steps) + 1))  # back to the cache before the last kept token ran
                logits, _, _ = self._forward(self.steps[-1].token_id, cache)
            except RuntimeError:  # a sliding-window cache cannot go back past its window: recompute
                logits, cache = self._run_prefix(self.ids)
            self._state = _State(logits, cache)

    def switch(self, branch: Branch) -> None:
        """Restores an undone continuation with the prefix it followed: back to where that path leaves the
        current one, then its tokens replayed as picks."""
        fork = branch.fork(self.steps)
        self.undo(fork)
        self.branches = [b for b in self.branches if b is not branch]
        for old in branch.path[fork:]:
            if self.finished:
                break
            self.step(old.settings, pick=old.token_id)
            self.steps[-1] = replace(self.steps[-1], how=old.how, seed=old.seed)  # as it was first chosen

    # model calls ----------------------------------------------------------------------------
    def _prefill(self) -> None:
        with self.loaded.lock, torch.inference_mode():
            if self._first_logits is None:
                logits, cache = self._run_prefix(self.prompt_ids)
                self._first_logits = logits
                self._state = _State(logits, cache)
            else:  # back to the prompt: the same pass again
                logits, cache = self._run_prefix(self.prompt_ids)
                self._state = _State(self._first_logits, cache)

    def _device(self):
        return input_device(self.loaded.model)

    def _new_cache(self):
        if self.source_ids is not None:
            # no config: layers are added as they come (a config sizes T5's cache by its encoder's depth)
            return EncoderDecoderCache(DynamicCache(), DynamicCache())
        return DynamicCache(config=self.loaded.model.config)  # sliding-window layers keep only their window

    @contextmanager
    def _steered(self):
        """The steering hook attached for one pass (the caller holds the model's lock)."""
        handles = hooked.attach([self.steer.hook(self.loaded.model)]) if self.steer is not None else []
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def unsteered(self) -> torch.Tensor:
        """The next token's raw probabilities [vocab] after the same tokens without the steering: one pass
        of the whole sequence, no cache (what the model would say here unsteered)."""
        model, device = self.loaded.model, self._device()
        with self.loaded.lock, torch.inference_mode():
            if self.source_ids is not None:  # the encoder again: steering may have changed its output
                out = model(input_ids=torch.tensor([self.source_ids], device=device), use_cache=False,
                            decoder_input_ids=torch.tensor([self.ids], device=device))  # fmt: skip
            else:
                out = model(
                    input_ids=torch.tensor([self.ids], device=device), logits_to_keep=1, use_cache=False
                )
        return torch.softmax(out.logits[0, -1].float().cpu(), -1)

    def _run_prefix(self, ids: list[int]) -> tuple[torch.Tensor, object]:
        with self._steered():
            return self._run_prefix_unhooked(ids)

    def _run_prefix_unhooked(self, ids: list[int]) -> tuple[torch.Tensor, object]:
        model, device = self.loaded.model, self._device()
        cache = self._new_cache()
        kwargs = dict(cache=cache, use_cache=True)
        if self.source_ids is not None:
            src = torch.tensor([self.source_ids], device=device)
            if self._encoder_outputs is None:
                self._encoder_outputs = model.get_encoder()(input_ids=src)
            decoder_ids = torch.tensor([ids], device=device)
            out = model(encoder_outputs=self._encoder_outputs, decoder_input_ids=decoder_ids, **kwargs)
        else:
            out = model(input_ids=torch.tensor([ids], device=device), logits_to_keep=1, **kwargs)
        return out.logits[0, -1].float().cpu(), out.cache

    def _forward(self, token_id: int, cache) -> tuple[torch.Tensor, tuple, tuple | None]:
        with self._steered():
            return self._forward_unhooked(token_id, cache)

    def _forward_unhooked(self, token_id: int, cache) -> tuple[torch.Tensor, tuple, tuple | None]:
        model, device = self.loaded.model, self._device()
        nxt = torch.tensor([[token_id]], device=device)
        if self.source_ids is not None:
            out = model(
                encoder_outputs=self._encoder_outputs, decoder_input_ids=nxt, cache=cache, use_cache=True,
                output_attentions=True,
            )  # fmt: skip
            return out.logits[0, -1].float().cpu(), out.decoder_attentions, out.cross_attentions
        out = model(input_ids=nxt, cache=cache, use_cache=True, output_attentions=True)
        return out.logits[0, -1].float().cpu(), out.attentions, None

    def _advance(self, token_id: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Runs the chosen token with the cache; returns its attention rows."""
        with self.loaded.lock, torch.inference_mode():
            logits, attentions, cross = self._forward(token_id, self._state.cache)
            self._state = _State(logits, self._state.cache)
        total = len(self.ids) + 1  # the positions the new token can see, itself included
        rows = np.zeros((len(attentions), attentions[0].shape[1], total), dtype=np.float32)
        for layer, a in enumerate(attentions):
            row = a[0, :, -1].float().cpu().numpy()  # [head, keys kept by this layer's cache]
            rows[layer, :, total - row.shape[-1] :] = row  # a sliding window keeps only the latest keys
        cross_rows = None
        if cross is not None:
            cross_rows = np.stack([c[0, :, -1].float().cpu().numpy() for c in cross])
        return rows, cross_rows

    # limits -----------------------------------------------------------------------------------
    def _stop_reason(self, token_id: int) -> str | None:
        if token_id in eos_ids(self.loaded):
            return "The model wrote its end-of-sequence token: the text is finished."
        limit = self.loaded.card.context_length
        if limit and len(self.ids) >= limit:
            return f"The sequence reached the model's context length ({limit} tokens)."
        return None

    def _check_room(self, n: int) -> None:
        limit = self.loaded.card.context_length
        if limit and n > limit:
            raise InputError(
                f"{n} tokens would exceed the model's context length ({limit}). Shorten the prompt."
            )

    @property
    def windows(self) -> tuple[int | None, ...]:
        n = self.steps[0].attention.shape[0] if self.steps else 0
        return layer_windows(self.loaded.model.config, n)


def eos_ids(loaded) -> set[int]:
    """Every id that ends a text for this model (generation config, config and tokenizer)."""
    found: set[int] = set()
    for source in (getattr(loaded.model, "generation_config", None), loaded.model.config, loaded.tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            found.add(value)
        elif isinstance(value, (list, tuple)):
            found.update(int(v) for v in value)
    return found


def chat_prompt(loaded, turns: list[str]) -> str:
    """The chat template applied to alternating user/assistant turns, ready for the assistant's reply."""
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
    return loaded.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def templated(loaded, prompt: str) -> str:
    """The prompt as one user turn in the model's chat template, ready for the assistant's answer."""
    if not loaded.card.chat_template:
        raise InputError(f"{loaded.card.name} has no chat template (a base model): turn chat off.")
    return chat_prompt(loaded, [prompt])
