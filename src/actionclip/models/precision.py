"""Inference preparation: the frame encoder's weights cast to bf16 or fp16, LayerNorm computed in fp32, embeddings
and logits returned in fp32, QuickGELU and BatchNorm folded into the weights before them and the ViT's patch embedding
run as a matmul.

On CPUs with native bf16 matrix units (AVX512-BF16, AMX) bf16 *weights* run ViTs several times faster than fp32,
while bf16 autocast alone gains nothing at small batches (it re-casts the fp32 weights at every call); figures in
docs/performance.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.modified_resnet import Bottleneck, ModifiedResNet
from open_clip.transformer import LayerNorm as OpenClipLayerNorm
from open_clip.transformer import LayerNormFp32, VisionTransformer
from open_clip.transformer import QuickGELU as OpenClipQuickGELU
from torch import nn

from actionclip.host.devices import DTYPES
from actionclip.host.memory import retain_freed_memory
from actionclip.models.temporal import QuickGELU
from actionclip.models.video import VideoEncoder


class MixedLayerNorm(nn.LayerNorm):
    """LayerNorm with fp32 weights over low-precision activations, computed in fp32 and returned in the input's
    dtype. On CPU torch's kernel takes the mixed dtypes as they are (no fp32 copy of the input); elsewhere the
    input is cast first."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu":
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return F.layer_norm(x.float(), self.normalized_shape, self.weight, self.bias, self.eps).to(x.dtype)


class PatchEmbeddingMatmul(nn.Conv2d):
    """A ViT's patch embedding (a convolution whose stride is its kernel) as one matrix product over the unfolded
    patches, the same arithmetic, which oneDNN runs faster than its convolution of the same weights, in bf16 most of
    all (``benchmarks/inference_rewrites.py`` measures it). The output has the convolution's shape ``[N, C, H', W']``
    over channels-last memory, so open_clip's flattening of the grid into tokens is a view."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, channels, height, width = x.shape
        ph, pw = self.kernel_size
        rows, cols = height // ph, width // pw
        x = x[:, :, : rows * ph, : cols * pw]  # as the convolution, which drops the pixels past the last patch
        patches = x.reshape(n, channels, rows, ph, cols, pw).permute(0, 2, 4, 1, 3, 5).reshape(n * rows * cols, -1)
        out = F.linear(patches, self.weight.reshape(self.out_channels, -1), self.bias)
        return out.view(n, rows, cols, self.out_channels).permute(0, 3, 1, 2)


def _is_patch_embedding(conv: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and conv.kernel_size == conv.stride
        and conv.padding == (0, 0)
        and conv.dilation == (1, 1)
        and conv.groups == 1
    )


QUICK_GELU_SCALE = 1.702


def fold_quick_gelu(model: nn.Module) -> nn.Module:
    """Rewrite every ``c_fc -> QuickGELU -> c_proj`` MLP (CLIP's blocks, Transf's, X-CLIP's) in place as the same
    function with one fused in-place SiLU: x * sigmoid(1.702 x) = silu(1.702 x) / 1.702, so c_fc's weight and bias
    take the factor 1.702 and c_proj's weight 1 / 1.702. QuickGELU costs three passes over the widest activation,
    each into fresh memory; on CPU that was a third of ViT-B/32's time in bf16."""
    for module in model.modules():
        if isinstance(module, nn.Sequential) and isinstance(getattr(module, "gelu", None), (QuickGELU, OpenClipQuickGELU)):
            with torch.no_grad():
                for tensor, factor in (
                    (module.c_fc.weight, QUICK_GELU_SCALE),
                    (module.c_fc.bias, QUICK_GELU_SCALE),
                    (module.c_proj.weight, 1 / QUICK_GELU_SCALE),
                ):
                    tensor.copy_(tensor.float() * factor)
            # In place: the activation is c_fc's fresh output, read by nothing else.
            module.gelu = nn.SiLU(inplace=True)
    return model


def _fold_batch_norm(module: nn.Module, conv_name: str, norm_name: str) -> None:
    conv, norm = getattr(module, conv_name), getattr(module, norm_name)
    with torch.no_grad():
        scale = norm.weight.float() / torch.sqrt(norm.running_var.float() + norm.eps)
        bias = norm.bias.float() - norm.running_mean.float() * scale
        if conv.bias is not None:
            bias += conv.bias.float() * scale
        conv.weight.copy_(conv.weight.float() * scale.view(-1, 1, 1, 1))
        conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=conv.weight.requires_grad)
    setattr(module, norm_name, nn.Identity())


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm of open_clip's ModifiedResNet (CLIP's RN50 and kin; inference statistics) into the
    convolution before it, in place and in fp32: one rounding of the folded weights to bf16 instead of a rounded
    convolution output followed by a normalisation with rounded statistics, and one pass over each activation less
    (``benchmarks/inference_rewrites.py`` times it)."""
    for module in model.modules():
        if isinstance(module, (ModifiedResNet, Bottleneck)):
            for i in (1, 2, 3):
                _fold_batch_norm(module, f"conv{i}", f"bn{i}")
        if isinstance(module, Bottleneck) and module.downsample is not None:
            _fold_batch_norm(module.downsample, "0", "1")
    return model


def _cast_per_frame_weights(model: nn.Module, dtype: torch.dtype) -> None:
    """Cast the floating-point parameters and buffers of ``model``'s children to ``dtype``, except the text tower,
    a ``head`` and ActionCLIP's temporal modules; the model's own (the logit scale) stay fp32 too. Those left out
    are never cast at all, so they keep their exact fp32 values."""
    fp32_prefixes = ("text.", "head.") + tuple(
        f"{name}.temporal." for name, module in model.named_modules() if isinstance(module, VideoEncoder)
    )
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if "." in name and tensor.is_floating_point() and not name.startswith(fp32_prefixes):
            tensor.data = tensor.data.to(dtype)


def prepare_for_inference(model: nn.Module, precision: str) -> nn.Module:
    """Make ``model`` an inference model, in place: QuickGELU folded into its MLP weights (:func:`fold_quick_gelu`),
    BatchNorm into its convolutions (:func:`fold_batch_norms`), the ViT's patch embedding run as a matmul
    (:class:`PatchEmbeddingMatmul`), the frame encoder's weights cast to ``precision`` with its LayerNorms in fp32.

    The text tower stays fp32: it runs once per label set, not per video, and every video is scored against its
    features, so its rounding would shift all scores alike and flip near-tie top-1s. So do the modules that run once
    per video rather than once per frame, a sliver of the work: ActionCLIP's temporal module, and a classifier's
    ``head``, whose bf16 logits would be rounded to 1/16 near 10; in bf16 both flipped top-1s of the demo's models
    (``actionclip demo`` reports the bf16 agreement of every variant).

    The model computes the same function, but its weights are no longer CLIP's, so it is marked and
    :func:`actionclip.save` refuses it: train or save the model before this. Also calls
    :func:`retain_freed_memory` for the process."""
    retain_freed_memory()
    model.eval()
    fold_quick_gelu(model)
    fold_batch_norms(model)
    for module in model.modules():
        if isinstance(module, VisionTransformer) and _is_patch_embedding(module.conv1):
            module.conv1.__class__ = PatchEmbeddingMatmul
    model.prepared_for_inference = True
    dtype = DTYPES[precision]
    _cast_per_frame_weights(model, dtype)
    if dtype == torch.float32:
        return model
    for module in model.modules():
        # torch's TransformerEncoderLayer (Transf_cls) calls its norms through a fused path that needs one dtype.
        if isinstance(module, nn.TransformerEncoderLayer):
            continue
        if type(module) in (nn.LayerNorm, OpenClipLayerNorm, LayerNormFp32):
            module.__class__ = MixedLayerNorm
            module.float()
        elif type(module).__name__ == "TFLayerNorm":
            module.float()
    return model
