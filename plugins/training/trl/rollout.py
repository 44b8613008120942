"""Multi-turn, token-in/token-out rollouts of a Hugging Face policy inside the synthagent environment.

Each completion is one episode of the LangGraph agent loop (:func:`synthagent.core.agent_loop.run_episode`) with a
:class:`TokenPolicy` as the agent. The policy keeps the episode as token ids, never as text:

* the opening (system prompt, user instruction, the task's own tools) is rendered once by the chat template and
  tokenized once: these are the ``prompt_ids``;
* each policy turn appends exactly the ids the model sampled (mask 1);
* each environment turn (tool results, the simulated user's reply) appends only the ids of the new text,
  rendered by the chat template as the difference between the conversation with and without the new messages
  (mask 0). Nothing earlier is decoded and re-tokenized, so the ids the loss sees are the ids the model
  sampled (the drift TRL issue #5224 describes cannot happen).

Concurrent episodes share a :class:`GenerationBatcher`: whenever every live episode waits for the model, their
requests are generated as one left-padded batch, so multi-turn rollouts cost about what TRL's single batched
``generate`` costs.

:func:`make_rollout_func` turns this into TRL's ``rollout_func`` (``GRPOTrainer(rollout_func=...)``) with the
rubric reward and the zero-variance group filter (:class:`ZeroVarianceFilter`).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from synthagent.core.errors import ConfigError, SynthError
from synthagent.core.models import Message, Task, Usage
from synthagent.core.protocols import ChatRequest, ChatResponse
from synthagent.core.toolcalls import parse_assistant
from synthagent.plugins.training.trl.environment import Rollout, RunEnvironment, prompt_key

__all__ = ["TemplateError", "TemplateRenderer", "GenerationBatcher", "TokenPolicy", "EpisodeTokens", "decode_turn",
           "ZeroVarianceFilter", "RolloutStats", "make_rollout_func", "run_batch",
           "model_generate_fn", "ZERO_VARIANCE_MODES"]

log = logging.getLogger("synthagent.train")

#: What to do with a group whose rewards are all equal (its GRPO advantages are all zero).
ZERO_VARIANCE_MODES = ("resample", "drop", "keep")


class TemplateError(SynthError):
    """The chat template cannot extend a conversation by appending (rendering is not prefix-stable)."""


class TemplateRenderer:
    """Renders conversations with the tokenizer's chat template and tokenizes only new text.

    :param tokenizer: a Hugging Face tokenizer whose chat template renders ``tools``.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def render(self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None, *,
               add_generation_prompt: bool) -> str:
        """The template's text for ``messages``."""
        return str(self.tokenizer.apply_chat_template(list(messages), tools=list(tools) if tools else None,
                                                      add_generation_prompt=add_generation_prompt, tokenize=False))

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (special tokens in the text are recognised; none are added)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None) -> list[int]:
        """The opening's ids, ending with the assistant generation prompt."""
        return self.encode(self.render(messages, tools, add_generation_prompt=True))

    def suffix_ids(self, history: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]],
                   tools: Sequence[Mapping[str, Any]] | None, end_of_turn: str) -> list[int]:
        """Ids of what the template adds after the policy's last turn for the ``new`` messages, up to and
        including the next assistant generation prompt.

        ``history`` ends with the policy's last (assistant) message, whose sampled ids ended with
        ``end_of_turn``; text the template puts after that token (ChatML's newline) is included here.
        """
        base = self.render(history, tools, add_generation_prompt=False)
        full = self.render([*history, *new], tools, add_generation_prompt=True)
        if not full.startswith(base):
            raise TemplateError("the chat template renders earlier turns differently once new messages follow, so "
                                "turns cannot be appended token-in/token-out; use chat_template=chatml-tools or a "
                                "prefix-stable template")
        cut = base.rfind(end_of_turn) if end_of_turn else -1
        glue = base[cut + len(end_of_turn):] if cut >= 0 else ""
        return self.encode(glue + full[len(base):])


GenerateFn = Callable[[list[list[int]], list[int]], list[list[int]]]


class GenerationBatcher:
    """Batches the generation requests of concurrent episodes.

    Episodes :meth:`enter` before they start and :meth:`leave` when they end; :meth:`generate` waits until every
    live episode is waiting (or gone), then runs one batched call of ``generate_fn(ids_batch, max_new_batch)``.
    """

    def __init__(self, generate_fn: GenerateFn) -> None:
        self.generate_fn = generate_fn
        self.live = 0
        self.pending: list[tuple[list[int], int, asyncio.Future[list[int]]]] = []
        self.calls = 0
        self.batch_sizes: list[int] = []
        self.seconds = 0.0

    def enter(self) -> None:
        """An episode starts."""
        self.live += 1

    def leave(self) -> None:
        """An episode ended (it will not ask again)."""
        self.live -= 1
        self._maybe_flush()

    async def generate(self, ids: list[int], max_new: int) -> list[int]:
        """The ids sampled after ``ids`` (at most ``max_new``; ending with an end-of-turn id unless cut)."""
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self.pending.append((ids, max_new, future))
        self._maybe_flush()
        return await future

    def _maybe_flush(self) -> None:
        if not self.pending or len(self.pending) < self.live:
            return
        batch, self.pending = self.pending, []
        start = time.perf_counter()
        try:
            outs = self.generate_fn([b[0] for b in batch], [b[1] for b in batch])
        except BaseException as exc:  # noqa: BLE001 - every waiting episode sees the failure
            for _, _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        finally:
            self.seconds += time.perf_counter() - start
        self.calls += 1
        self.batch_sizes.append(len(batch))
        for (_, _, fut), out in zip(batch, outs, strict=True):
            if not fut.done():
                fut.set_result(out)


def model_generate_fn(model: Any, tokenizer: Any, generation_config: Any, eos_ids: Sequence[int], *,
                      unwrap: Callable[[], Any] | None = None, bf16_autocast: bool = False) -> GenerateFn:
    """A :data:`GenerateFn` over a transformers causal LM: left-pads the batch, generates, cuts each row after
    its first end-of-turn id and at its own ``max_new``.

    :param unwrap: a context-manager factory yielding the model to generate with (TRL's
        ``unwrap_model_for_generation`` under DDP/DeepSpeed/FSDP); default: ``model`` itself.
    :param bf16_autocast: generate under ``torch.autocast(device, bfloat16)`` (float32 weights, bfloat16
        matmuls), as the trainer computes its loss with ``bf16=True``: about 2.3x faster on CPUs with AVX512-BF16.
    """
    import contextlib

    import torch

    eos = set(int(e) for e in eos_ids)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(eos))

    def generate(batch: list[list[int]], max_new: list[int]) -> list[list[int]]:
        width = max(len(ids) for ids in batch)
        device = next(model.parameters()).device
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention[row, width - len(ids):] = 1
        config = copy.deepcopy(generation_config)
        config.max_new_tokens = max(max_new)
        ctx = unwrap() if unwrap is not None else contextlib.nullcontext(model)
        cast = (torch.autocast(device.type, dtype=torch.bfloat16) if bf16_autocast
                else contextlib.nullcontext())
        with ctx as gen_model, torch.no_grad(), cast:
            out = gen_model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                                     generation_config=config)
        results: list[list[int]] = []
        for row, limit in enumerate(max_new):
            ids_out: list[int] = []
            for tok in out[row, width:].tolist():
                ids_out.append(int(tok))
                if tok in eos or len(ids_out) >= limit:
                    break
            results.append(ids_out)
        return results

    return generate


def decode_turn(tokenizer: Any, ids: Sequence[int]) -> str:
    """The text of one sampled policy turn: decoded with special tokens, then every special token except the
    tool-call markers removed (what :func:`~synthagent.core.toolcalls.parse_assistant` reads)."""
    text = str(tokenizer.decode(list(ids), skip_special_tokens=False))
    for special in {tokenizer.eos_token, tokenizer.pad_token, *getattr(tokenizer, "all_special_tokens", [])} - {None}:
        if special not in ("<tool_call>", "</tool_call>"):
            text = text.replace(special, "")
    return text.strip()


@attrs.define
class EpisodeTokens:
    """The token record of one episode: ``prompt_ids``, then ``completion_ids`` with ``mask`` (1 = sampled by the
    policy, 0 = written by the environment). ``turns`` lists ``(start, end, source)`` spans of the completion."""

    prompt_ids: list[int] = attrs.field(factory=list)
    completion_ids: list[int] = attrs.field(factory=list)
    mask: list[int] = attrs.field(factory=list)
    turns: list[tuple[int, int, str]] = attrs.field(factory=list)

    def add(self, ids: Sequence[int], source: str) -> None:
        """Append ``ids`` from ``source`` (``policy``, ``tool`` or ``user``)."""
        start = len(self.completion_ids)
        self.completion_ids.extend(int(i) for i in ids)
        self.mask.extend([1 if source == "policy" else 0] * len(ids))
        self.turns.append((start, len(self.completion_ids), source))


class TokenPolicy:
    """An :class:`~synthagent.core.protocols.LLMBackend` for one episode that generates with a local model
    token-in/token-out (module docstring).

    :param budget: the most completion ids (policy and environment together) of the episode.
    :param max_turn_tokens: the most ids one policy turn may sample.
    :param policy_budget: the most ids the policy may sample over the whole episode (0 = only ``budget``), so
        policy and environment tokens are budgeted separately (:class:`~.ceiling.EpisodeLimits`).
    """

    name = "policy"

    def __init__(self, batcher: GenerationBatcher, renderer: TemplateRenderer, tools: Sequence[Mapping[str, Any]],
                 *, budget: int, max_turn_tokens: int, eos_ids: Sequence[int], name: str = "policy",
                 policy_budget: int = 0) -> None:
        self.batcher = batcher
        self.policy_budget = int(policy_budget)
        self.renderer = renderer
        self.tools = list(tools)
        self.budget = int(budget)
        self.max_turn_tokens = int(max_turn_tokens)
        self.eos_ids = set(int(e) for e in eos_ids)
        self.name = name
        self.tokens = EpisodeTokens()
        self.exhausted = False
        self._seen = 0
        self._turn = 0
        self._end_of_turn = ""
        #: An exception the policy raised (the agent loop records it as an infra error; training re-raises it).
        self.error: BaseException | None = None

    def _decode(self, ids: Sequence[int]) -> str:
        return decode_turn(self.renderer.tokenizer, ids)

    def _stop(self) -> ChatResponse:
        self.exhausted = True
        return ChatResponse(Message("assistant", ""), Usage(0, 0, 1))

    async def chat(self, request: ChatRequest) -> ChatResponse:
        """Extend the episode's ids with the environment's new turns, sample the next policy turn, parse it."""
        try:
            return await self._chat(request)
        except BaseException as exc:
            self.error = exc
            raise

    async def _chat(self, request: ChatRequest) -> ChatResponse:
        messages = [m.openai() for m in request.messages]
        if self.exhausted:
            return self._stop()
        if not self._seen:
            self.tokens.prompt_ids = self.renderer.prompt_ids(messages, self.tools)
        else:
            new = messages[self._seen:]
            sources = [m["role"] for m in new]
            if new:
                ids = self.renderer.suffix_ids(messages[:self._seen], new, self.tools, self._end_of_turn)
                if len(self.tokens.completion_ids) + len(ids) >= self.budget:
                    return self._stop()
                self.tokens.add(ids, "tool" if sources and all(s == "tool" for s in sources) else "user")
        room = min(self.max_turn_tokens, self.budget - len(self.tokens.completion_ids))
        if self.policy_budget > 0:
            room = min(room, self.policy_budget - sum(self.tokens.mask))
        if room <= 0:
            return self._stop()
        out = await self.batcher.generate(self.tokens.prompt_ids + self.tokens.completion_ids, room)
        self.tokens.add(out, "policy")
        if not out or out[-1] not in self.eos_ids:
            self.exhausted = True  # the turn was cut: the episode ends after it
        else:
            self._end_of_turn = str(self.renderer.tokenizer.decode([out[-1]], skip_special_tokens=False))
        # ids unique within the episode (the scorer pairs each call with its result by id)
        self._turn += 1
        message = parse_assistant(self._decode(out), id_prefix=f"call_t{self._turn}")
        self._seen = len(messages) + 1  # the graph appends this message before anything new
        return ChatResponse(message, Usage(len(self.tokens.prompt_ids), len(out), 1))


async def run_batch(env: RunEnvironment, jobs: Sequence[tuple[Task, int]], generate_fn: GenerateFn,
                    renderer: TemplateRenderer, *, budget: int, max_turn_tokens: int, eos_ids: Sequence[int],
                    seed: int, policy_budget: int = 0
                    ) -> tuple[list[Rollout], list[EpisodeTokens], GenerationBatcher]:
    """Run one episode per ``(task, sample)`` job concurrently with batched generation; score each.

    ``policy_budget`` caps the ids the policy samples per episode (0 = only ``budget``, see :class:`TokenPolicy`).
    """
    batcher = GenerationBatcher(generate_fn)
    policies = [TokenPolicy(batcher, renderer, env.tools_schema(task), budget=budget, policy_budget=policy_budget,
                            max_turn_tokens=max_turn_tokens, eos_ids=eos_ids) for task, _ in jobs]
    for _ in jobs:
        batcher.enter()

    async def one(job: tuple[Task, int], policy: TokenPolicy) -> Rollout:
        try:
            return await env.rollout(job[0], policy, sample=job[1], seed=seed)
        finally:
            batcher.leave()

    rollouts = await asyncio.gather(*(one(job, p) for job, p in zip(jobs, policies, strict=True)))
    for policy in policies:
        if policy.error is not None:  # a policy failure is a bug or a bad template, never a reward of 0
            raise policy.error
    return list(rollouts), [p.tokens for p in policies], batcher


@attrs.define
class RolloutStats:
    """What one call of the rollout function saw (summed over processes before logging)."""

    groups: int = 0
    zero_variance_groups: int = 0
    resampled_groups: int = 0
    dropped_groups: int = 0
    rollouts: int = 0
    reward_sum: float = 0.0
    reward_sq_sum: float = 0.0
    successes: int = 0
    policy_tokens: int = 0
    env_tokens: int = 0
    turns: int = 0
    tool_calls: int = 0
    generate_calls: int = 0
    seconds: float = 0.0
    rewards: list[float] = attrs.field(factory=list)


class ZeroVarianceFilter:
    """Dynamic sampling for GRPO groups whose rewards are all equal (DAPO; TRL issue #3708).

    :param mode: ``resample`` (run such groups again on other training tasks, up to ``max_resample`` rounds; what
        is still flat afterwards is dropped), ``drop`` (mask such groups out of the loss entirely: they add neither
        gradient nor tokens to the loss normaliser), or ``keep`` (TRL's behaviour: they stay in with advantage 0).
    :param tolerance: rewards closer than this count as equal.
    """

    def __init__(self, mode: str = "resample", max_resample: int = 2, tolerance: float = 1e-6) -> None:
        if mode not in ZERO_VARIANCE_MODES:
            raise ConfigError(f"zero_variance={mode!r}; choose one of {', '.join(ZERO_VARIANCE_MODES)}")
        if int(max_resample) < 0:
            raise ConfigError("max_resample must not be negative")
        self.mode = mode
        self.max_resample = int(max_resample)
        self.tolerance = float(tolerance)

    def is_flat(self, rewards: Sequence[float]) -> bool:
        """True when every reward of the group equals the first (within the tolerance)."""
        return all(abs(r - rewards[0]) <= self.tolerance for r in rewards)

    def flat_groups(self, rewards: Sequence[float], group_size: int) -> list[int]:
        """Indices of the zero-variance groups of a flat reward list (consecutive groups of ``group_size``)."""
        return [g for g in range(len(rewards) // group_size)
                if self.is_flat(rewards[g * group_size:(g + 1) * group_size])]

    def mask_groups(self, masks: list[list[int]], groups: Sequence[int], group_size: int) -> None:
        """Zero the loss mask of every completion in ``groups`` (in place)."""
        for g in groups:
            for i in range(g * group_size, (g + 1) * group_size):
                masks[i] = [0] * len(masks[i])


def make_rollout_func(env: RunEnvironment, task_pool: Sequence[str], *, filter: ZeroVarianceFilter,
                      max_turn_tokens: int, seed: int, on_stats: Callable[[RolloutStats], None],
                      keep_rollouts: list[Any] | None = None,
                      policy_budget: int = 0) -> Callable[[list[Any], Any], dict[str, Any]]:
    """TRL's ``rollout_func(prompts, trainer)``: run each prompt (already repeated ``num_generations`` times) as a
    multi-turn episode of its task, score it, filter zero-variance groups, and return ``prompt_ids``,
    ``completion_ids``, ``logprobs`` (None), ``env_mask`` and the rewards as ``synth_reward`` for the reward
    function :func:`rubric_reward`.

    :param task_pool: ids of the training tasks that resampling may draw from.
    :param keep_rollouts: when given, every call's ``(rollouts, tokens)`` is appended (tests and debugging).
    :param policy_budget: ids the policy may sample per episode (0 = only ``max_completion_length``).
    """
    by_prompt: dict[Any, list[Task]] = {}
    for tid in task_pool:
        by_prompt.setdefault(prompt_key(env.prompt(env.tasks[tid])), []).append(env.tasks[tid])
    rng = random.Random(seed)
    calls = {"n": 0}

    def rollout_func(prompts: list[Any], trainer: Any) -> dict[str, Any]:
        from trl.models import unwrap_model_for_generation

        start = time.perf_counter()
        group = int(trainer.num_generations if trainer.model.training else trainer.num_generations_eval)
        if len(prompts) % group:
            raise ConfigError(f"the rollout got {len(prompts)} prompts, not whole groups of num_generations={group}; "
                              "make per_device_train_batch_size a multiple of num_generations")
        tasks: list[Task] = []
        for g in range(len(prompts) // group):
            keys = {prompt_key(p) for p in prompts[g * group:(g + 1) * group]}
            candidates = by_prompt.get(next(iter(keys)))
            if len(keys) != 1 or not candidates:
                raise SynthError("a GRPO group does not hold one training task's prompt; the dataset must come from "
                                 "this algorithm's own task list")
            # Tasks can share an opening (an underspecified request; the hidden facts and database differ): the
            # policy cannot tell them apart from the prompt, so the group plays one of them, drawn at random.
            tasks.append(candidates[0] if len(candidates) == 1 else rng.choice(candidates))
        renderer = TemplateRenderer(trainer.processing_class)
        model = trainer.model
        eos_ids = list(trainer.eos_token_ids)

        def unwrap() -> Any:
            return unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator,
                                               gather_deepspeed3_params=trainer.args.ds3_gather_for_generation,
                                               generation_kwargs=trainer.generation_kwargs,
                                               gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs)

        budget = int(trainer.max_completion_length)
        calls["n"] += 1
        base_sample = calls["n"] * 1000 + int(trainer.accelerator.process_index) * 100_000
        stats = RolloutStats(groups=len(tasks))
        was_training = model.training
        # One unwrap per call (every process calls the rollout once per generation step): under DeepSpeed ZeRO-3
        # the parameter gather is a collective, so it must not depend on how many turns this process's episodes take.
        with unwrap() as gen_model:
            generate_fn = model_generate_fn(gen_model, trainer.processing_class, trainer.generation_config, eos_ids,
                                            bf16_autocast=bool(trainer.args.bf16))

            def run(group_tasks: Sequence[Task], offset: int) -> tuple[list[Rollout], list[EpisodeTokens], int]:
                jobs = [(t, base_sample + offset + i) for t in group_tasks for i in range(group)]
                rollouts, tokens, batcher = asyncio.run(run_batch(
                    env, jobs, generate_fn, renderer, budget=budget, max_turn_tokens=max_turn_tokens,
                    policy_budget=policy_budget, eos_ids=eos_ids, seed=seed))
                return rollouts, tokens, batcher.calls

            rollouts, tokens, gen_calls = run(tasks, 0)
            rewards = [r.reward for r in rollouts]
            flat = filter.flat_groups(rewards, group)
            stats.zero_variance_groups = len(flat)
            if filter.mode == "resample":
                for round_ in range(filter.max_resample):
                    if not flat:
                        break
                    pool = list(task_pool)
                    fresh = [env.tasks[tid] for tid in rng.sample(pool, k=min(len(flat), len(pool)))]
                    while len(fresh) < len(flat):
                        fresh.append(env.tasks[rng.choice(pool)])
                    new_rollouts, new_tokens, more_calls = run(fresh, (round_ + 1) * 10)
                    gen_calls += more_calls
                    stats.resampled_groups += len(flat)
                    for j, g in enumerate(flat):
                        lo = g * group
                        rollouts[lo:lo + group] = new_rollouts[j * group:(j + 1) * group]
                        tokens[lo:lo + group] = new_tokens[j * group:(j + 1) * group]
                    rewards = [r.reward for r in rollouts]
                    flat = filter.flat_groups(rewards, group)
        masks = [list(t.mask) for t in tokens]
        if filter.mode in ("resample", "drop") and flat:
            filter.mask_groups(masks, flat, group)
            stats.dropped_groups = len(flat)
        if was_training != model.training:
            model.train(was_training)
        stats.rollouts = len(rollouts)
        stats.rewards = rewards
        stats.reward_sum = sum(rewards)
        stats.reward_sq_sum = sum(r * r for r in rewards)
        stats.successes = sum(r.success for r in rollouts)
        stats.policy_tokens = sum(sum(t.mask) for t in tokens)
        stats.env_tokens = sum(len(t.mask) - sum(t.mask) for t in tokens)
        stats.turns = sum(r.trajectory.turns for r in rollouts)
        stats.tool_calls = sum(len(m.tool_calls) for r in rollouts for m in r.trajectory.messages)
        stats.generate_calls = gen_calls
        stats.seconds = time.perf_counter() - start
        on_stats(stats)
        if keep_rollouts is not None:
            keep_rollouts.append((rollouts, tokens, masks))
        return {
            "prompt_ids": [t.prompt_ids for t in tokens],
            "completion_ids": [t.completion_ids for t in tokens],
            "logprobs": None,
            "env_mask": masks,
            "synth_reward": rewards,
            "synth_task_id": [r.task.id for r in rollouts],
        }

    return rollout_func


def rubric_reward(prompts: Any = None, completions: Any = None, synth_reward: Sequence[float] | None = None,
                  **kwargs: Any) -> list[float | None]:
    """TRL reward function: the rubric score each rollout earned in the environment (computed by the rollout)."""
    if synth_reward is None:
        raise SynthError("rubric_reward needs the synth_reward field from synthagent's rollout_func")
    return [float(r) for r in synth_reward]
