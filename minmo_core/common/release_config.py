"""The CosyVoice 2 release's own description of its models: ``cosyvoice2.yaml``.

The file is HyperPyYAML (``!new:module.Class`` tags, ``!ref <key>`` references). Nothing in it
is executed here: tags are read as plain mappings and scalars, references are resolved
against the file's top-level keys, and only the sizes we need are taken.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from minmo_core.common.releases import COSYVOICE2, verify_files
from minmo_core.config import DiTFlowConfig, FlowConfig, HiFTConfig
from minmo_core.errors import CheckpointError

RELEASE_YAML = "cosyvoice2.yaml"
RELEASE_YAMLS = {2: RELEASE_YAML, 3: "cosyvoice3.yaml"}  # CosyVoice generation -> its file
UPSAMPLE_ENCODER_UP_BLOCKS = 4  # fixed inside the release's UpsampleConformerEncoder


class _TolerantLoader(yaml.SafeLoader):
    """SafeLoader that reads any ``!tag`` node as the plain value under it."""


def _untagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> object:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    value = loader.construct_scalar(node)
    return ("!ref", value) if suffix == "ref" else value


_TolerantLoader.add_multi_constructor("!", _untagged)


def _resolve(value: object, top: dict) -> object:
    if isinstance(value, tuple) and value[:1] == ("!ref",):
        match = re.fullmatch(r"\s*<([\w.]+)>\s*", str(value[1]))
        if match:
            return _resolve(top.get(match.group(1)), top)
        return _arithmetic(str(value[1]), top)
    if isinstance(value, dict):
        return {k: _resolve(v, top) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, top) for v in value]
    return value


def _arithmetic(expression: str, top: dict) -> object:
    """A ``!ref`` expression such as ``<chunk_size> * <token_mel_ratio>``: the references'
    numbers combined with + - * / (nothing else is evaluated); otherwise the text itself."""
    import ast
    import operator

    operators = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
                 ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv}  # fmt: skip

    def number(name: str) -> str:
        value = _resolve(top.get(name), top)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(name)
        return repr(value)

    def evaluate(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return evaluate(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in operators:
            return operators[type(node.op)](evaluate(node.left), evaluate(node.right))
        raise ValueError(ast.dump(node))

    try:
        text = re.sub(r"<([\w.]+)>", lambda m: number(m.group(1)), expression)
        return evaluate(ast.parse(text, mode="eval"))
    except (ValueError, SyntaxError, ZeroDivisionError):
        return expression


def release_generation(folder: Path | str) -> int:
    """Which CosyVoice a release folder holds, from its yaml (never from its name):
    3 with ``cosyvoice3.yaml``, else 2 (``cosyvoice2.yaml``, or a folder of bare weights)."""
    folder = Path(folder)
    found = [g for g, name in RELEASE_YAMLS.items() if (folder / name).is_file()]
    if len(found) > 1:
        raise CheckpointError(
            f"{folder} holds both {' and '.join(RELEASE_YAMLS.values())}: one release per folder"
        )
    return found[0] if found else 2


def read_release_yaml(path: Path) -> dict:
    try:
        raw = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_TolerantLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise CheckpointError(f"cannot read {path}: {err}") from err
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} is not a mapping of model settings")
    return _resolve(raw, raw)


def flow_config(flow: dict, encoder: dict, decoder: dict, source: str = RELEASE_YAML) -> FlowConfig:
    """FlowConfig from the release's constructor arguments (names as in cosyvoice2.yaml)."""
    try:
        estimator, cfm = decoder["estimator"], decoder["cfm_params"]
        cfm = cfm.get("content", cfm)  # the yaml wraps it in an omegaconf DictConfig
        return FlowConfig(
            input_size=int(flow["input_size"]),
            output_size=int(flow["output_size"]),
            vocab_size=int(flow["vocab_size"]),
            spk_embed_dim=int(flow["spk_embed_dim"]),
            token_mel_ratio=int(flow["token_mel_ratio"]),
            pre_lookahead_len=int(flow["pre_lookahead_len"]),
            encoder_heads=int(encoder["attention_heads"]),
            encoder_ffn=int(encoder["linear_units"]),
            encoder_blocks=int(encoder["num_blocks"]),
            encoder_up_blocks=UPSAMPLE_ENCODER_UP_BLOCKS,
            estimator_channels=tuple(int(c) for c in estimator["channels"]),
            estimator_blocks_per_stage=int(estimator["n_blocks"]),
            estimator_mid_blocks=int(estimator["num_mid_blocks"]),
            estimator_heads=int(estimator["num_heads"]),
            estimator_head_dim=int(estimator["attention_head_dim"]),
            cfg_rate=float(cfm["inference_cfg_rate"]),
            sigma_min=float(cfm["sigma_min"]),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: the flow's settings lack or mangle {err}") from err


def hift_config(hift: dict, causal: bool, source: str = RELEASE_YAML) -> HiFTConfig:
    """HiFTConfig from the release's ``hift:`` constructor arguments (names as in the yaml;
    ``causal``: CosyVoice 3's CausalHiFTGenerator)."""
    try:
        istft, predictor = hift["istft_params"], hift.get("f0_predictor", {})
        return HiFTConfig(
            sample_rate=int(hift["sampling_rate"]),
            in_channels=int(hift["in_channels"]),
            base_channels=int(hift["base_channels"]),
            nb_harmonics=int(hift["nb_harmonics"]),
            upsample_rates=tuple(int(r) for r in hift["upsample_rates"]),
            upsample_kernel_sizes=tuple(int(k) for k in hift["upsample_kernel_sizes"]),
            istft_n_fft=int(istft["n_fft"]),
            istft_hop=int(istft["hop_len"]),
            resblock_kernel_sizes=tuple(int(k) for k in hift["resblock_kernel_sizes"]),
            resblock_dilations=tuple(
                tuple(int(d) for d in ds) for ds in hift["resblock_dilation_sizes"]
            ),
            source_resblock_kernel_sizes=tuple(
                int(k) for k in hift["source_resblock_kernel_sizes"]
            ),
            nsf_alpha=float(hift["nsf_alpha"]),
            nsf_sigma=float(hift["nsf_sigma"]),
            nsf_voiced_threshold=float(hift["nsf_voiced_threshold"]),
            audio_limit=float(hift.get("audio_limit", 0.99)),
            f0_cond_channels=int(predictor.get("cond_channels", hift["base_channels"])),
            causal=causal,
            conv_pre_look_right=int(hift.get("conv_pre_look_right", 4)),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: the vocoder's settings lack or mangle {err}") from err


def dit_flow_config(flow: dict, source: str = "cosyvoice3.yaml") -> DiTFlowConfig:
    """DiTFlowConfig from the release's ``flow:`` section (CausalMaskedDiffWithDiT, its
    ``pre_lookahead_layer`` and ``decoder.estimator`` nested as in cosyvoice3.yaml)."""
    try:
        lookahead, decoder = flow["pre_lookahead_layer"], flow["decoder"]
        estimator, cfm = decoder["estimator"], decoder["cfm_params"]
        cfm = cfm.get("content", cfm)
        return DiTFlowConfig(
            input_size=int(flow["input_size"]),
            output_size=int(flow["output_size"]),
            vocab_size=int(flow["vocab_size"]),
            spk_embed_dim=int(flow["spk_embed_dim"]),
            token_mel_ratio=int(flow["token_mel_ratio"]),
            pre_lookahead_len=int(flow["pre_lookahead_len"]),
            pre_lookahead_channels=int(lookahead["channels"]),
            dim=int(estimator["dim"]),
            depth=int(estimator["depth"]),
            heads=int(estimator["heads"]),
            dim_head=int(estimator["dim_head"]),
            ff_mult=int(estimator["ff_mult"]),
            static_chunk_size=int(estimator["static_chunk_size"]),
            cfg_rate=float(cfm["inference_cfg_rate"]),
            sigma_min=float(cfm["sigma_min"]),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: the flow's settings lack or mangle {err}") from err


def release_flow_config(folder: Path, allow_unpinned: bool = False) -> FlowConfig:
    """The flow's sizes from ``folder/cosyvoice2.yaml`` (checked against its pin unless
    ``allow_unpinned``; other weights without the file get the release's defaults)."""
    path = Path(folder) / RELEASE_YAML
    if allow_unpinned and not path.is_file():
        return FlowConfig()
    verify_files(folder, COSYVOICE2, [RELEASE_YAML], allow_unpinned)
    raw = read_release_yaml(path)
    flow = raw.get("flow")
    if not isinstance(flow, dict):
        raise CheckpointError(f"{path} has no flow section")
    return flow_config(flow, flow.get("encoder", {}), flow.get("decoder", {}), str(path))
