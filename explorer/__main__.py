"""Command line: `python -m explorer models|info|trace|generate|ablate|patch|heads|dla|features|... ...`
over the app's library."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

from explorer.errors import ExplorerError, InputError, first_line
from explorer.models import zoo


def _quiet() -> None:
    """Keep stdout for JSON and stderr for one-line messages: silence library chatter."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _models(args: argparse.Namespace) -> int:
    rows = [
        {"name": e.name, "family": e.family, "source": "embedded", "title": e.title, "package": e.package}
        for e in zoo.ZOO.values()
    ]
    if args.json:
        print(json.dumps(rows))
    else:
        width = max(len(r["name"]) for r in rows)
        for r, e in zip(rows, zoo.ZOO.values()):
            default = "  (default)" if e.name == zoo.DEFAULT_MODEL else ""
            print(f"{r['name']:<{width}}  {r['family']:<15} {e.summary}{default}")
    return 0


def _request(args: argparse.Namespace):
    from explorer.models.loading import LoadRequest

    return LoadRequest.parse(
        args.model, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code
    )


def _info(args: argparse.Namespace) -> int:
    from explorer.models.loading import load_model

    loaded = load_model(_request(args))
    print(json.dumps(loaded.card.to_dict(), indent=2 if args.pretty else None))
    return 0


def _prepare(args: argparse.Namespace) -> int:
    """Converts the embedded GGUF models once, so that the app starts in seconds."""
    from explorer.models import convert, devices
    from explorer.models.loading import embedded_weights

    for name in args.names or list(zoo.ZOO):
        item = zoo.entry(name)
        if not item.converts or convert.is_converted(item.cache_key):
            print(f"{name}: ready", file=sys.stderr)
            continue
        started = time.perf_counter()
        last = [""]

        def progress(stage: str, fraction: float, name: str = name) -> None:
            if stage != last[0]:
                print(f"{name}: {stage} ({fraction:.0%})", file=sys.stderr, flush=True)
                last[0] = stage

        embedded_weights(item, devices.available_bytes("cpu"), progress)
        print(f"{name}: converted in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if not args.names or zoo.DEFAULT_MODEL in args.names:
        _first_view()
    return 0


def _first_view() -> None:
    """The default model's run of its first text, saved for the app's first visitor (explorer.runs.saved)
    unless saved already by this code on these weights."""
    from explorer.models.loading import LoadRequest, load_model
    from explorer.runs import saved
    from explorer.runs.capture import capture

    request = LoadRequest("embedded", zoo.DEFAULT_MODEL)
    if saved.find(request) is not None:
        print(f"{request.ref}: first view ready", file=sys.stderr)
        return
    started = time.perf_counter()
    loaded = load_model(request)
    text = zoo.default_text(loaded)
    try:
        path = saved.save(request, loaded.card, text, capture(loaded, text))
    except OSError as err:  # the app works without it: its first picture waits for the model
        print(f"{request.ref}: the first view could not be saved ({err})", file=sys.stderr)
        return
    took = time.perf_counter() - started
    print(f"{request.ref}: first view saved in {took:.0f} s ({path})", file=sys.stderr)


def _verify(args: argparse.Namespace) -> int:
    """Attention from scratch against the model's own maps, every layer and head; exit 1 when any
    head differs by more than the tolerance."""
    from explorer.analyses import scratch
    from explorer.models.loading import load_model

    loaded = load_model(_request(args))
    try:
        result = scratch.verify(loaded, args.text)
    except InputError as err:  # empty or too long text; a model whose attention is not decomposed
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0 if result["ok"] else 1


def _trace(args: argparse.Namespace) -> int:
    """Runs MODEL on a text and writes every attention map and hidden state to an .npz file."""
    from explorer.models.loading import load_model
    from explorer.runs.capture import capture
    from explorer.runs.export import write_npz

    loaded = load_model(_request(args))
    if args.target is not None and loaded.card.family != "encoder-decoder":
        raise InputError(f"--target is for encoder-decoders; {loaded.card.name} is a {loaded.card.family}.")
    cap = capture(loaded, args.text, target=args.target)
    write_npz(cap, args.out)
    summary = {
        "model": cap.model_name,
        "family": cap.family,
        "out": args.out,
        "layers": int(cap.attentions.shape[0]),
        "heads": int(cap.attentions.shape[1]),
        "tokens": list(cap.sequence.tokens),
    }
    if cap.source is not None:
        summary["encoder_tokens"] = list(cap.source.tokens)
        summary["target_generated"] = cap.target_generated
    print(json.dumps(summary, ensure_ascii=False))
    return 0


def _task(args: argparse.Namespace) -> int:
    """Runs one NLP task on MODEL and prints the results as JSON; a task the model cannot do exits 1."""
    from explorer import tasks
    from explorer.models.loading import load_model

    try:
        name = tasks.task_name(args.task)
        options = {k: v for k, v in vars(args).items() if k in TASK_OPTIONS and v is not None}
        given = tasks.TaskInput(
            texts=args.text or [],
            labels=tasks.parse_labels(args.labels or ""),
            context=args.context or "",
            options=options,
        )
        result = tasks.run(load_model(_request(args)), name, given)
    except tasks.TaskError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result.to_dict(), ensure_ascii=False, indent=None if args.json else 2))
    return 0


TASK_OPTIONS = ("max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "seed", "pair", "target")


def _generate(args: argparse.Namespace) -> int:
    """Steps through generation; prints one JSON object per step."""
    from explorer.analyses.tokens import display_tokens
    from explorer.models.loading import load_model
    from explorer.runs.stepping import Settings, Stepper

    if args.steps < 1:
        raise InputError("--steps must be 1 or more.")
    loaded = load_model(_request(args))
    if args.source is not None and loaded.card.family != "encoder-decoder":
        raise InputError(f"--source is for encoder-decoders; {loaded.card.name} is a {loaded.card.family}.")
    settings = Settings(
        args.temperature, args.top_k, args.top_p, args.repetition_penalty, None if args.greedy else args.seed
    )
    settings.check()
    steer = None
    if args.steer_plus or args.steer_minus:
        from explorer.analyses import steering

        if args.steer_layer is None:
            raise InputError("--steer-layer is needed with --steer-plus and --steer-minus.")
        steer = steering.build(loaded, args.steer_plus or [], args.steer_minus or [], args.steer_layer,
                               args.steer_coef)  # fmt: skip
    stepper = Stepper.start(loaded, args.prompt or "", chat=args.chat, source=args.source, steer=steer)
    for _ in range(args.steps):
        unsteered = stepper.unsteered() if steer is not None else None
        s = stepper.step(settings)
        row = {
            "step": s.index,
            "token_id": s.token_id,
            "token": s.token,
            "prob": s.prob,
            "prob_processed": s.prob_processed,
            "rank": s.rank,
            "how": s.how,
            "top": [
                {"token_id": c.token_id, "token": c.token, "prob": c.prob, "prob_processed": c.prob_processed}
                for c in s.top
            ],
        }
        if unsteered is not None:  # the same step without the steering, for comparison
            top = unsteered.topk(len(s.top))
            row["unsteered_prob"] = float(unsteered[s.token_id])
            row["unsteered_top"] = [
                {"token_id": int(i), "token": t, "prob": float(p)}
                for i, t, p in zip(
                    top.indices, display_tokens(loaded.tokenizer, top.indices.tolist()), top.values
                )
            ]
        if args.json:
            print(json.dumps(row, ensure_ascii=False), flush=True)
        else:
            print(
                f"{s.index:>4}  {s.token!r:<20} p={s.prob:.4f}  shaped={s.prob_processed:.4f}  rank {s.rank}",
                flush=True,
            )
        if stepper.finished:
            print(stepper.finished, file=sys.stderr)
            break
    return 0


def _ablate(args: argparse.Namespace) -> int:
    """Knocks out heads (--heads) or scans every head in turn; prints the effect on --target."""
    from explorer.analyses import experiments
    from explorer.models.loading import load_model

    loaded = load_model(_request(args))
    probe = experiments.prepare(loaded, args.text, args.prefix or "", args.stack)
    target = experiments.target_token(loaded, probe, args.target)
    if target.note:
        print(f"note: {target.note}", file=sys.stderr)
    if args.heads:
        heads = experiments.parse_heads(args.heads)
        result = experiments.ablate(loaded, probe, heads, args.mode, target)
        row = {
            "heads": [{"layer": a, "head": b} for a, b in heads],
            "mode": args.mode,
            "target": target.token,
            "target_id": target.token_id,
            "logprob_before": float(result.before[target.token_id]),
            "logprob_after": float(result.after[target.token_id]),
            "delta_logprob": result.delta_logprob,
            "kl": result.kl,
            "top_before": [
                {"token": t, "prob": p} for _, t, p in experiments.top_tokens(loaded, result.before, 5)
            ],
            "top_after": [
                {"token": t, "prob": p} for _, t, p in experiments.top_tokens(loaded, result.after, 5)
            ],
        }
        rows = [row]
    else:
        scan = experiments.scan_heads(loaded, probe, target, args.mode)
        layers, heads = scan.delta_logprob.shape
        rows = [
            {"stack": scan.stack, "layer": a, "head": b, "delta_logprob": float(scan.delta_logprob[a, b]),
             "kl": float(scan.kl[a, b])}
            for a in range(layers) for b in range(heads)
        ]  # fmt: skip
    for row in rows:
        if args.json:
            print(json.dumps(row, ensure_ascii=False))
        elif "layer" in row:
            print(
                f"L{row['layer']:<3} H{row['head']:<3} Δlogp {row['delta_logprob']:+.4f}  KL {row['kl']:.4f}"
            )
        else:
            print(json.dumps(row, ensure_ascii=False, indent=2))
    return 0


def _patch(args: argparse.Namespace) -> int:
    """Activation patching from --clean into --corrupt; one row per kind, layer and position."""
    from explorer.analyses import experiments
    from explorer.models.loading import load_model

    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in experiments.KINDS]
    if unknown or not kinds:
        raise InputError(
            f"--kinds takes {', '.join(experiments.KINDS)} (comma-separated), not {args.kinds!r}."
        )
    loaded = load_model(_request(args))
    result = experiments.patch(
        loaded,
        args.clean,
        args.corrupt,
        args.target,
        args.foil,
        kinds,
        prefix=args.prefix or "",
        stack=args.stack,
    )
    for note in (result.target.note, result.foil.note):
        if note:
            print(f"note: {note}", file=sys.stderr)
    for kind, values in result.restored.items():
        for layer in range(values.shape[0]):
            for pos, token in enumerate(result.tokens):
                row = {"kind": kind, "layer": layer, "position": pos, "token": token,
                       "restored": float(values[layer, pos])}  # fmt: skip
                if args.json:
                    print(json.dumps(row, ensure_ascii=False))
                else:
                    print(f"{kind:<5} L{layer:<3} {pos:>3} {token!r:<16} {row['restored']:+.4f}")
    return 0


def _heads(args: argparse.Namespace) -> int:
    """Every head scored for a pattern on a probe of random tokens repeated, highest first."""
    from explorer.analyses import heads
    from explorer.models.loading import load_model

    if args.detect == "pattern" and not (args.pattern and args.text):
        raise InputError("--detect pattern needs --pattern 'query:key,key;...' and the --text it is of.")
    loaded = load_model(_request(args))
    if args.detect == "pattern":
        found = heads.on_text(loaded, args.text, args.pattern, stack=args.stack, prefix=args.prefix or "")
    else:
        found = heads.detect(loaded, args.detect, seed=args.seed, length=args.length, stack=args.stack)
    for row in found.ranked():
        if args.json:
            print(json.dumps(row))
        else:
            print(f"layer {row['layer']:>3}  head {row['head']:>3}  {row['score']:.4f}")
    return 0


def _dla(args: argparse.Namespace) -> int:
    """Direct logit attribution: every part's direct effect on logit(target) - logit(foil)."""
    from explorer.analyses import dla
    from explorer.models.loading import load_model

    loaded = load_model(_request(args))
    found = dla.attribute(loaded, args.text, args.target, args.foil, prefix=args.prefix or "")
    for note in (found.target.note, found.foil.note if found.foil else ""):
        if note:
            print(f"note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(found.to_dict()))
    else:
        for p in sorted(found.parts, key=lambda p: -abs(p.value))[:20]:
            where = "".join(f" {k} {v}" for k, v in (("layer", p.layer), ("head", p.head)) if v is not None)
            print(f"{p.value:+9.4f}  {p.name}{where}")
        print(f"total {found.total:+.4f}; the model's own logit difference {found.logit_diff:+.4f}")
    return 0


def _features(args: argparse.Namespace) -> int:
    """The sparse autoencoder's strongest features on every token of --text."""
    from explorer.models import zoo
    from explorer.models.loading import load_model
    from explorer.sae import features
    from explorer.sae.sae import load

    loaded = load_model(_request(args))
    folder = args.sae or zoo.sae_folder(loaded.request)
    if folder is None:
        raise InputError(f"No SAE was trained here for {loaded.card.name}: give one with --sae FOLDER.")
    sae = load(folder)
    found = features.on_text(loaded, sae, args.text)
    for row in found.to_rows(args.top):
        if args.json:
            print(json.dumps(row))
        else:
            top = "  ".join(f"#{f['feature']} {f['activation']:.2f}" for f in row["top"])
            print(f"{row['pos']:>4} {row['token']!r:<16} {top}")
    return 0


def _attribute(args: argparse.Namespace) -> int:
    """Which input tokens the prediction of --target comes from, by one method (Captum's, or rollout)."""
    from explorer.analyses import attribution
    from explorer.models.loading import load_model

    loaded = load_model(_request(args))
    found = attribution.attribute(loaded, args.text, args.target, args.method, args.foil, args.prefix or "",
                                  steps=args.steps)  # fmt: skip
    if args.json:
        print(json.dumps(found.to_dict(), ensure_ascii=False))
    else:
        for token, score in zip(found.tokens, found.scores):
            print(f"{score:+10.4f}  {token!r}")
        if found.delta is not None:
            print(f"convergence delta {found.delta:+.4f} (sum of scores - (f(input) - f(baseline)))")
    return 0


def _flow(args: argparse.Namespace) -> int:
    """Information flow: one JSON object per (layer, position) with the importance of every term of its
    residual updates; with --position, only the rows on the routes to that position (at --threshold)."""
    from explorer.analyses import flow
    from explorer.models.loading import load_model

    loaded = load_model(_request(args))
    result = flow.compute(loaded, args.text, args.target)  # errors (ExplorerError): one line from main()
    if args.position is not None:
        routes = flow.trace(result, args.position, args.threshold)
        n_sub = len(result.sublayers)
        on_route = {(lvl // n_sub, p) for lvl, p in routes.nodes if lvl < result.n_layers * n_sub}
    for row in result.rows():
        if args.position is None or (row["layer"], row["position"]) in on_route:
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                best = max((t for t in row["terms"] if "head" not in t), key=lambda t: t["importance"])
                what = best["kind"] + (f" from {best['source']}" if "source" in best else "")
                print(
                    f"layer {row['layer']:>3}  position {row['position']:>4}  strongest term: {what} "
                    f"({best['sublayer']}) {best['importance']:.3f}"
                )
    return 0


def _model_arguments(p: argparse.ArgumentParser) -> None:
    """MODEL and how it is loaded: the same choices as the sidebar's."""
    p.add_argument("model", help="embedded name, Hugging Face Hub id, checkpoint folder or .gguf file")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps or multi-gpu")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    p.add_argument("--trust-remote-code", action="store_true", help="run Python shipped with the checkpoint")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m explorer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list the embedded models")
    p.add_argument("--json", action="store_true", help="a JSON list of {name, family, source}")
    p.set_defaults(run=_models)

    p = sub.add_parser("info", help="load MODEL and print its architecture card as JSON")
    _model_arguments(p)
    p.add_argument("--pretty", action="store_true", help="indent the JSON")
    p.set_defaults(run=_info)

    p = sub.add_parser("verify", help="attention from scratch vs the model's own, every layer and head")
    _model_arguments(p)
    p.add_argument("--text", required=True, help="the text to run")
    p.set_defaults(run=_verify)

    p = sub.add_parser("trace", help="run MODEL on a text; write its attention and hidden states (.npz)")
    _model_arguments(p)
    p.add_argument("--text", required=True, help="the text (for encoder-decoders: the source)")
    p.add_argument("--target", help="encoder-decoders: the decoder's prefix (default: its own greedy output)")
    p.add_argument("--out", required=True, help="the .npz file to write")
    p.set_defaults(run=_trace)

    p = sub.add_parser("task", help="run an NLP task (text-classification, fill-mask, ...) and print JSON")
    _model_arguments(p)
    p.add_argument(
        "task",
        help="text-classification (sentiment-analysis), zero-shot-classification, token-classification "
        "(ner), question-answering, fill-mask, text-generation, chat, summarization, translation, "
        "feature-extraction, sentence-similarity, semantic-search",
    )
    p.add_argument("--text", action="append", help="an input (repeat for several; chat: the turns)")
    p.add_argument("--labels", help="zero-shot: candidate labels, comma-separated")
    p.add_argument(
        "--context", help="question-answering: the passage; semantic-search: documents, one a line"
    )
    p.add_argument("--max-new-tokens", type=int, help="generation: new tokens at most")
    p.add_argument(
        "--sample", dest="do_sample", action="store_true", default=None, help="sample (default greedy)"
    )
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-k", type=int, help="fill-mask: candidates; sampling: top-k")
    p.add_argument("--top-p", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--pair", help="translation with T5: a language pair such as en_to_de")
    p.add_argument("--target-language", dest="target", help="translation by a prompted decoder: the language")
    p.add_argument("--json", action="store_true", help="one line of JSON (default: indented)")
    p.set_defaults(run=_task)

    p = sub.add_parser("generate", help="step through generation; one line per step")
    _model_arguments(p)
    p.add_argument(
        "--prompt", default="", help="the text to continue (encoder-decoders: the decoder's prefix)"
    )
    p.add_argument("--source", help="encoder-decoders: the encoder's input")
    p.add_argument("--steps", type=int, default=20, help="tokens to generate (default 20)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--greedy", action="store_true", help="the most likely token each step (the default)")
    mode.add_argument("--seed", type=int, help="sample, with this seed")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="0: off")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--chat", action="store_true", help="put the prompt in the model's chat template")
    p.add_argument("--steer-plus", action="append", help="steer toward this prompt (repeat for a list)")
    p.add_argument("--steer-minus", action="append", help="steer away from this prompt (repeat for a list)")
    p.add_argument("--steer-layer", type=int, help="the block whose input the steering vector is added to")
    p.add_argument("--steer-coef", type=float, default=4.0, help="times the vector (0: no change)")
    p.add_argument("--json", action="store_true", help="one JSON object per step")
    p.set_defaults(run=_generate)

    p = sub.add_parser("ablate", help="knock out attention heads; without --heads, scan every head")
    _model_arguments(p)
    p.add_argument("--text", required=True, help="the text (encoder-decoders: the source)")
    p.add_argument("--target", required=True, help="the next token to follow, e.g. ' Paris'")
    p.add_argument("--heads", help="LAYER.HEAD,... to knock out together (default: scan each head alone)")
    p.add_argument("--mode", default="zero", choices=["zero", "mean"], help="zero, or the head's mean output")
    p.add_argument("--prefix", help="encoder-decoders: the decoder's prefix")
    p.add_argument("--stack", choices=["encoder", "decoder"], help="encoder-decoders: whose heads")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(run=_ablate)

    p = sub.add_parser(
        "patch", help="activation patching (causal tracing) from a clean into a corrupted prompt"
    )
    _model_arguments(p)
    p.add_argument("--clean", required=True, help="the clean prompt")
    p.add_argument("--corrupt", required=True, help="the corrupted prompt, with the same number of tokens")
    p.add_argument("--target", required=True, help="the clean answer, e.g. ' Paris'")
    p.add_argument("--foil", required=True, help="the corrupted answer, e.g. ' Rome'")
    p.add_argument("--kinds", default="resid,attn,mlp", help="resid, attn, mlp (comma-separated)")
    p.add_argument("--prefix", help="encoder-decoders: the decoder's prefix")
    p.add_argument("--stack", choices=["encoder", "decoder"], help="encoder-decoders: which stack to patch")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(run=_patch)

    p = sub.add_parser("heads", help="find heads by what they do: every head scored for a pattern")
    _model_arguments(p)
    kinds = ["induction", "previous", "duplicate", "first", "pattern"]
    p.add_argument("--detect", required=True, choices=kinds)
    p.add_argument("--pattern", help="with --detect pattern: each query's keys, 'query:key,key;...'")
    p.add_argument("--text", help="with --detect pattern: the text the pattern's positions are of")
    p.add_argument("--prefix", help="encoder-decoders, --detect pattern: the decoder's prefix")
    p.add_argument("--seed", type=int, default=0, help="of the random tokens of the probe")
    p.add_argument("--length", type=int, default=50, help="random tokens, repeated once")
    p.add_argument("--stack", choices=["encoder", "decoder"], help="encoder-decoders: whose heads")
    p.add_argument("--json", action="store_true", help="one JSON object per head, highest score first")
    p.set_defaults(run=_heads)

    p = sub.add_parser("dla", help="direct logit attribution: each head's and block's share of a logit")
    _model_arguments(p)
    p.add_argument("--text", required=True, help="the text (encoder-decoders: the source)")
    p.add_argument("--target", required=True, help="the next token, e.g. ' Paris'")
    p.add_argument("--foil", help="a token to compare with, e.g. ' Rome' (logit difference)")
    p.add_argument("--prefix", help="encoder-decoders: the decoder's prefix")
    p.add_argument("--json", action="store_true", help='one JSON object: {"total", "parts", "logit_diff"}')
    p.set_defaults(run=_dla)

    p = sub.add_parser("features", help="a sparse autoencoder's strongest features on each token")
    _model_arguments(p)
    p.add_argument("--text", required=True)
    p.add_argument("--sae", help="a folder in SAELens' layout (default: the one trained here for MODEL)")
    p.add_argument("--top", type=int, default=8, help="features per token")
    p.add_argument("--json", action="store_true", help='one JSON object per token: {"pos", "token", "top"}')
    p.set_defaults(run=_features)

    p = sub.add_parser("attribute", help="input attribution: which tokens a prediction comes from (Captum)")
    _model_arguments(p)
    p.add_argument("--text", required=True, help="the text (encoder-decoders: the source)")
    p.add_argument("--target", required=True, help="the next token, e.g. ' Paris'")
    p.add_argument("--foil", help="a token to compare with (the logit difference is attributed)")
    p.add_argument("--method", default="integrated_gradients",
                   choices=["integrated_gradients", "saliency", "input_x_gradient", "occlusion",
                            "attention_rollout"])  # fmt: skip
    p.add_argument("--steps", type=int, default=32, help="integrated gradients: points on the path")
    p.add_argument("--prefix", help="encoder-decoders: the decoder's prefix")
    p.add_argument("--json", action="store_true", help='one JSON object: {"tokens", "scores", "delta"}')
    p.set_defaults(run=_attribute)

    p = sub.add_parser("flow", help="information flow: importance of each term of each residual update")
    _model_arguments(p)
    p.add_argument("--text", required=True, help="the text (for encoder-decoders: the source)")
    p.add_argument("--target", help="encoder-decoders: the decoder's prefix (default: its own greedy output)")
    p.add_argument("--position", type=int, help="only the rows on the routes to this position")
    p.add_argument(
        "--threshold", type=float, default=0.04, help="with --position: the importance an edge needs"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per (layer, position)")
    p.set_defaults(run=_flow)

    p = sub.add_parser(
        "prepare",
        help="convert the embedded GGUF models once, save the first view (make run does this)",
    )
    p.add_argument("names", nargs="*", help="embedded model names (default: all)")
    p.set_defaults(run=_prepare)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _quiet()
    try:
        return args.run(args)
    except ExplorerError as err:  # load, input, task and unsupported-model errors: one sentence each
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # one line, no traceback, for any failure the library did not foresee
        print(f"error: {type(err).__name__}: {first_line(err)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
