"""Configuration dataclasses for every MinMo component.

Defaults are the real sizes (the official releases' config files and MinMo's paper,
arXiv 2501.06282). Each config has a ``tiny()`` preset that builds in
milliseconds on a CPU, for tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from minmo_core.errors import ConfigError


@dataclass(frozen=True)
class FrontendConfig:
    """SenseVoice's WavFrontend: kaldi fbank -> LFR -> CMVN."""

    sample_rate: int = 16000  # the encoder's input rate; any file is resampled to this
    n_mels: int = 80
    frame_length_ms: float = 25.0  # 400 samples at 16 kHz, FFT padded to 512
    frame_shift_ms: float = 10.0  # 100 fbank frames per second
    window: str = "hamming"
    dither: float = 0.0  # the official default is 1.0 (random); 0 keeps results reproducible
    lfr_m: int = 7  # frames stacked per LFR frame: 7 x 80 = 560 features
    lfr_n: int = 6  # LFR hop: 100 / 6 = 16.7 encoder frames per second

    @property
    def lfr_dim(self) -> int:
        return self.n_mels * self.lfr_m  # 560

    @classmethod
    def tiny(cls) -> FrontendConfig:
        return cls()  # the front end has no weights; it is already fast


@dataclass(frozen=True)
class VoiceEncoderConfig:
    """SenseVoiceSmall's SAN-M encoder with its query embeddings and CTC head."""

    input_size: int = 560  # 80 mel x LFR m=7
    d_model: int = 512
    n_heads: int = 4
    d_ffn: int = 2048
    n_blocks: int = 50  # encoders0 (1 layer, 560 -> 512) + encoders (49 layers)
    tp_blocks: int = 20  # the "time-prediction" stack after after_norm
    kernel_size: int = 11  # FSMN memory: depthwise conv over time
    sanm_shift: int = 0  # 0 = symmetric FSMN context
    vocab_size: int = 25055  # chn_jpn_yue_eng_ko_spectok.bpe.model
    n_queries: int = 16  # rows of the query embedding: 7 + 7 languages + 2 text norms
    blank_id: int = 0

    @classmethod
    def tiny(cls) -> VoiceEncoderConfig:
        # the reduced size of the SenseVoice golden fixture
        return cls(d_model=64, n_heads=4, d_ffn=128, n_blocks=3, tp_blocks=2, vocab_size=256)


@dataclass(frozen=True)
class InputProjectorConfig:
    """MinMo's input projector: a 2x-downsampling CNN then 2 transformer layers.

    At the defaults (512 -> 3584, Qwen2.5-7B's width) it holds about 167M parameters;
    the paper reports 170M.
    """

    d_in: int = 512  # voice encoder width
    d_model: int = 3584  # LLM hidden size
    n_layers: int = 2
    n_heads: int = 28
    d_ffn: int = 4096
    kernel_size: int = 3
    stride: int = 2  # 16.7 Hz encoder frames -> 8.3 Hz LLM positions
    dropout: float = 0.0

    @classmethod
    def tiny(cls) -> InputProjectorConfig:
        return cls(d_in=64, d_model=32, n_heads=4, d_ffn=64)


@dataclass(frozen=True)
class OutputProjectorConfig:
    """MinMo's output projector: one linear map into the voice-token LM's width.

    Input is [user-input embedding ; LLM last hidden state] along features
    (2 x 3584 = 7168), output the voice LM's 896: 6.4M parameters (paper: 6M).
    """

    d_in: int = 7168
    d_out: int = 896

    @classmethod
    def tiny(cls) -> OutputProjectorConfig:
        return cls(d_in=64, d_out=32)


@dataclass(frozen=True)
class LLMConfig:
    """How the Qwen2.5-Instruct LLM is run. Its sizes come from the model folder."""

    dtype: str = "bfloat16"  # on CPU the loader falls back to float32
    weight_bits: int = 16  # 8 or 4: bitsandbytes-quantised weights on CUDA (experimental)
    max_new_tokens: int = 512
    temperature: float = 0.7  # Qwen2.5-Instruct's generation_config
    top_p: float = 0.8
    top_k: int = 20
    repetition_penalty: float = 1.05
    system_prompt: str = (
        "You are MinMo, a helpful voice assistant. Answer in short spoken sentences, "
        "without lists, markdown or emoji."
    )
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")

    @classmethod
    def tiny(cls) -> LLMConfig:
        return cls(dtype="float32", max_new_tokens=16)


@dataclass(frozen=True)
class VoiceTokenLMConfig:
    """The speech-token LM of CosyVoice 2 (cosyvoice2.yaml, ``Qwen2LM``) or CosyVoice 3
    (cosyvoice3.yaml, ``CosyVoice3LM``).

    The two differ in their control outputs. CosyVoice 2: sos and task_id are the two rows
    of ``llm_embedding``; the head has S + 3 outputs with a bias (eos S, fill S + 2).
    CosyVoice 3: no ``llm_embedding``, sos and task_id are rows S and S + 2 of
    ``speech_embedding``; the head has S + 200 outputs and no bias (eos S + 1, fill S + 3,
    every one of the 200 a stop id), and an instruction (up to ``<|endofprompt|>``) goes
    right after sos.
    """

    llm_input_size: int = 896
    llm_output_size: int = 896
    speech_token_size: int = 6561  # 3^8 FSQ codes, 25 per second
    token_frame_rate: int = 25
    mix_ratio: tuple[int, int] = (5, 15)  # text tokens : speech tokens per block
    sos_id: int = 0  # row of llm_embedding
    task_id: int = 1  # row of llm_embedding: "turn of speech", text is over
    endofprompt_text_id: int = 151646  # <|endofprompt|> in the release's tokenizer
    top_p: float = 0.8
    top_k: int = 25
    win_size: int = 10  # repetition-aware sampling window
    tau_r: float = 0.1
    min_token_text_ratio: float = 2.0
    max_token_text_ratio: float = 20.0
    chunk_tokens: int = 15  # speech tokens handed to token2wav at a time (MinMo)
    cosyvoice: int = 2  # the release generation: 2 or 3

    def __post_init__(self) -> None:
        if self.cosyvoice not in (2, 3):
            raise ConfigError(f"no CosyVoice {self.cosyvoice} voice LM: 2 or 3")

    @property
    def n_outputs(self) -> int:
        """The head's outputs: speech codes, then control ids."""
        return self.speech_token_size + (200 if self.cosyvoice == 3 else 3)

    @property
    def eos_token(self) -> int:
        """End of speech: 6561 (CosyVoice 2), 6562 (CosyVoice 3)."""
        return self.speech_token_size + (1 if self.cosyvoice == 3 else 0)

    @property
    def fill_token(self) -> int:
        """The "15 speech tokens done, give me 5 more text" output: 6563 (CosyVoice 2), 6564 (3)."""
        return self.speech_token_size + (3 if self.cosyvoice == 3 else 2)

    @property
    def stop_tokens(self) -> tuple[int, ...]:
        """Every non-speech output (the release stops on any of them)."""
        return tuple(range(self.speech_token_size, self.n_outputs))

    @property
    def min_len_banned(self) -> tuple[int, ...]:
        """What the release masks until min_len speech tokens are out: index S, which is eos
        in CosyVoice 2 but sos in CosyVoice 3, so a CosyVoice 3 utterance may end early."""
        return (self.speech_token_size,)

    @property
    def instruction_after_sos(self) -> bool:
        """CosyVoice 3 puts the prompt's text up to <|endofprompt|> right after sos, before
        any interleaving, and needs that token in every prompt."""
        return self.cosyvoice == 3

    @classmethod
    def tiny(cls) -> VoiceTokenLMConfig:
        # the geometry of the CosyVoice 2 LM golden fixture: width 896 is hard-coded in the
        # release's input builder, the tiny model is 1 layer with 96 speech codes
        return cls(speech_token_size=96)


@dataclass(frozen=True)
class FlowConfig:
    """CosyVoice 2's causal flow-matching token-to-mel model (CausalMaskedDiffWithXvec)."""

    input_size: int = 512
    output_size: int = 80  # mel bins
    vocab_size: int = 6561
    spk_embed_dim: int = 192
    token_mel_ratio: int = 2  # 25 Hz tokens -> 50 Hz mel
    pre_lookahead_len: int = 3
    encoder_heads: int = 8
    encoder_ffn: int = 2048
    encoder_blocks: int = 6
    encoder_up_blocks: int = 4
    estimator_channels: tuple[int, ...] = (256,)
    estimator_blocks_per_stage: int = 4
    estimator_mid_blocks: int = 12
    estimator_heads: int = 8
    estimator_head_dim: int = 64
    n_timesteps: int = 10
    cfg_rate: float = 0.7
    sigma_min: float = 1e-6
    chunk_tokens: int = 15  # MinMo synthesises every 15 speech tokens

    @classmethod
    def tiny(cls) -> FlowConfig:
        return cls(
            input_size=32,
            spk_embed_dim=16,
            encoder_heads=2,
            encoder_ffn=64,
            encoder_blocks=1,
            encoder_up_blocks=1,
            estimator_channels=(32,),
            estimator_blocks_per_stage=1,
            estimator_mid_blocks=1,
            estimator_heads=2,
            estimator_head_dim=16,
            n_timesteps=2,
        )


@dataclass(frozen=True)
class DiTFlowConfig:
    """CosyVoice 3's flow-matching token-to-mel model (CausalMaskedDiffWithDiT): token
    embeddings (80 wide) through one look-ahead layer, a DiT estimator."""

    input_size: int = 80
    output_size: int = 80  # mel bins
    vocab_size: int = 6561
    spk_embed_dim: int = 192
    token_mel_ratio: int = 2
    pre_lookahead_len: int = 3
    pre_lookahead_channels: int = 1024
    dim: int = 1024
    depth: int = 22
    heads: int = 16
    dim_head: int = 64
    ff_mult: int = 2
    static_chunk_size: int = 50  # mel frames per attention chunk when streaming
    n_timesteps: int = 10
    cfg_rate: float = 0.7
    sigma_min: float = 1e-6
    chunk_tokens: int = 15  # MinMo synthesises every 15 speech tokens

    @classmethod
    def tiny(cls) -> DiTFlowConfig:
        return cls(
            vocab_size=256, spk_embed_dim=16, pre_lookahead_channels=32, dim=32, depth=1,
            heads=2, dim_head=16, n_timesteps=2,
        )  # fmt: skip


@dataclass(frozen=True)
class HiFTConfig:
    """The HiFT vocoder: CosyVoice 2's HiFTGenerator + ConvRNNF0Predictor, or with
    ``causal`` CosyVoice 3's CausalHiFTGenerator + CausalConvRNNF0Predictor."""

    sample_rate: int = 24000
    in_channels: int = 80
    base_channels: int = 512
    nb_harmonics: int = 8
    upsample_rates: tuple[int, ...] = (8, 5, 3)
    upsample_kernel_sizes: tuple[int, ...] = (16, 11, 7)
    istft_n_fft: int = 16
    istft_hop: int = 4  # 8 * 5 * 3 * 4 = 480 samples per mel frame
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilations: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    source_resblock_kernel_sizes: tuple[int, ...] = (7, 7, 11)
    nsf_alpha: float = 0.1
    nsf_sigma: float = 0.003
    nsf_voiced_threshold: float = 10.0
    audio_limit: float = 0.99
    f0_cond_channels: int = 512
    causal: bool = False  # CosyVoice 3
    conv_pre_look_right: int = 4  # causal: mel frames conv_pre looks ahead
    f0_look_right: int = 3  # causal: mel frames the F0 predictor's first conv looks ahead

    @classmethod
    def tiny(cls) -> HiFTConfig:
        return cls(base_channels=32, f0_cond_channels=32)


@dataclass(frozen=True)
class DuplexPredictorConfig:
    """MinMo's full-duplex predictor: 1 transformer layer + linear-softmax over 3 actions.

    The paper gives 18M parameters and no widths; reading 3584-wide LLM states through a
    1024-wide layer (FFN 4096) gives about 16M.
    """

    d_in: int = 3584
    d_model: int = 1024
    n_heads: int = 16
    d_ffn: int = 4096
    n_actions: int = 3  # keep listening, take the turn, stop speaking

    @classmethod
    def tiny(cls) -> DuplexPredictorConfig:
        return cls(d_in=32, d_model=16, n_heads=2, d_ffn=32)


@dataclass(frozen=True)
class MinMoConfig:
    """The whole model."""

    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    encoder: VoiceEncoderConfig = field(default_factory=VoiceEncoderConfig)
    input_projector: InputProjectorConfig = field(default_factory=InputProjectorConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    output_projector: OutputProjectorConfig = field(default_factory=OutputProjectorConfig)
    voice_lm: VoiceTokenLMConfig = field(default_factory=VoiceTokenLMConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    hift: HiFTConfig = field(default_factory=HiFTConfig)
    duplex: DuplexPredictorConfig = field(default_factory=DuplexPredictorConfig)

    @classmethod
    def tiny(cls) -> MinMoConfig:
        return cls(
            frontend=FrontendConfig.tiny(),
            encoder=VoiceEncoderConfig.tiny(),
            input_projector=InputProjectorConfig.tiny(),
            llm=LLMConfig.tiny(),
            output_projector=OutputProjectorConfig.tiny(),
            voice_lm=VoiceTokenLMConfig.tiny(),
            flow=FlowConfig.tiny(),
            hift=HiFTConfig.tiny(),
            duplex=DuplexPredictorConfig.tiny(),
        )


__all__ = [
    "DuplexPredictorConfig",
    "FlowConfig",
    "FrontendConfig",
    "HiFTConfig",
    "InputProjectorConfig",
    "LLMConfig",
    "MinMoConfig",
    "OutputProjectorConfig",
    "VoiceEncoderConfig",
    "VoiceTokenLMConfig",
]
