"""No markdown cell of a solution notebook quotes a number that looks measured unless the notebook
computes it or it is a known constant.

A measured result (a ratio, an energy distance, a percentage, a timing) belongs in the output of a code
cell, where it changes with the run; the text only refers to it. This test reads every markdown cell
(prompts, discussions and the hidden model answers alike) and picks out the numbers that look like
results: decimals (0.497, 1.1, 3.3e-2), percentages (25 %), and factors (30x, 30 times, 50 million).
A number passes when

* it appears literally in a code cell of the same notebook (a parameter the code uses: ``0.02``,
  ``max_beta=0.2``; a percentage or factor only as written, ``20 %``), or
* it is a section or exercise number (``### 8.1``, ``section 8.2``, ``see 8.3``, ``Exercise 2.1``), or
* it is in ``ALLOWED`` below for that notebook, with the reason it is not a measured result of the run
  (a constant of the data or a paper, a closed-form value, or a value whose spread is far below its
  last digit).

Anything else fails, with the cell and the words around the number. To fix a failure, let the code
print the number and have the text refer to the printed line, or, where the number is a constant,
add it to ``ALLOWED`` with its reason.
"""

import json
import re
from pathlib import Path

import pytest

SOLUTIONS = Path(__file__).resolve().parents[2] / "solutions"
NOTEBOOKS = sorted(SOLUTIONS.glob("*/*.ipynb"))

# Decimals and scientific numbers; percentages; factors ("30x", "30 times", "50 million").
NUMBER = re.compile(
    r"(?<![\w.{])"
    r"(\d+(?:\.\d+)?(?:\s?(?:%|\\%|percent\b|x\b|times\b|million\b))"
    r"|\d+\.\d+(?:e[-+]?\d+)?"
    r"|\d(?:\.\d+)?e[-+]?\d+)"
    r"(?![\w}])")
SECTION = re.compile(r"(?:#+\s*|[Ss]ections?\s+|Exercise\s+|see\s+)$")

ALLOWED = {
    "01_forward_process": {
        "0.05": "the exercise's bound on alpha_bar_T for my_betas (a requirement, not a result)",
    },
    "02_loss_comparison": {
        "25 %": "the size of run-to-run timing noise on a shared laptop (ENGINEERING.md), a reading rule",
    },
    "03_reverse_1d": {
        "95 %": "the mass of a normal within two standard deviations",
        "0.034": "mean of x_T in closed form, sqrt(alpha_bar_T) * m (the cell derives it)",
        "1.3": "alpha_bar_T = 1.3e-4, closed form from the schedule",
        "0.99995": "std of x_T in closed form, sqrt(v_T)",
        "0.005": "the stated goal for the recovered moments",
        "0.6": "alpha_bar_10 in closed form (model answer)",
        "0.73": "std of q(x_10) in closed form (model answer)",
        "0.62": "shortcut std at t = 10 (model answer); 10^6 chains, SE 5e-4, printed by the shortcut cell",
        "0.96": "corr(x_0, x_1) in closed form; the cell prints it (model answer)",
        "0.497": "std of x_0 with sigma^2 = beta (model answer); 10^6 chains, SE 4e-4, printed in section 6",
    },
    "04_denoising_2d": {
        "0.8": "cluster weights 0.2 / 0.8 of a hypothetical in Question 1",
        "80 %": "the heavier weight of that hypothetical (model answer)",
        "0.001": "alpha_T = 1 - 0.999, closed form (model answer)",
        "1.1": "1 / sqrt(1 - 0.2), closed form (model answer)",
        "1 %": "the training fractions at which snapshots are taken (train_steps // 100, // 20, // 5)",
        "5 %": "the training fractions at which snapshots are taken",
        "20 %": "the training fractions at which snapshots are taken",
        "100 %": "the training fractions at which snapshots are taken",
    },
    "05_guided_two_pixel": {
        "35 %": "the mixture's weights, a constant of the data",
        "65 %": "the mixture's weights, a constant of the data",
        "0.75": "a class mean of the data",
        "0.45": "a class mean of the data",
        "0.1": "the data's standard deviation per pixel",
        "100 %": "model answer: the in-class fraction at w = 0 that section 7's table prints (1.0000 of 5000 in full mode)",
    },
    "06_mnist": {
        "0.02": "Ho et al.'s linear schedule end (a paper value)",
        "0.008": "the cosine schedule's offset s (a paper value)",
        "0.2": "course_utils.mnist.COSINE_MAX_BETA",
        "0.999": "Nichol and Dhariwal's clip (a paper value)",
        "0.75": "the parameter count of unet.CPU_CONFIG, fixed by the configuration",
        "2x": "the U-Net's down- and upsampling factor in the architecture diagram",
        "10 %": "the label-dropout probability of the training script",
    },
}


def flagged_numbers(notebook: dict, allowed: dict) -> list[str]:
    """'cell N: NUMBER in "...context..."' for every number of a markdown cell that nothing accounts for."""
    code = "\n".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code")
    found = []
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        text = re.sub(r"\]\([^)]*\)", "]", "".join(cell["source"]))     # link targets are addresses, not claims
        for match in NUMBER.finditer(text):
            number = match.group(1)
            value = re.match(r"[\d.]+(?:e[-+]?\d+)?", number).group(0)
            if SECTION.search(text[max(0, match.start() - 40):match.start()]):
                continue
            if number in allowed or value in allowed:
                continue
            # A plain decimal may be a parameter the code uses; a percentage or a factor only counts when the
            # code writes it the same way (a bare 30 in the code says nothing about "30 times").
            literal = value if number == value else number
            if re.search(r"(?<![\w.])" + re.escape(literal) + r"(?![\w])", code):
                continue
            context = text[max(0, match.start() - 60):match.end() + 30].replace("\n", " ")
            found.append(f'cell {index}: {number} in "...{context}..."')
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_markdown_quotes_no_uncomputed_number(path):
    notebook = json.loads(path.read_text())
    found = flagged_numbers(notebook, ALLOWED.get(path.stem, {}))
    assert not found, (f"{path.stem}: numbers in the text that no code cell computes and that are not allowed as "
                       f"constants (let the code print them, or add them to ALLOWED with a reason):\n  "
                       + "\n  ".join(found))


def test_the_check_flags_a_quoted_result():
    """The check fails on the kinds of sentence it exists for, and passes their rewritten forms."""
    def notebook(markdown, code="x = linear_betas(50, 0.02, 0.3)"):
        return {"cells": [{"cell_type": "code", "source": [code]}, {"cell_type": "markdown", "source": [markdown]}]}

    for quoted in ("on the laptop the ratio came out between 0.7 and 1.3 (median 1.1)",
                   "the run prints about 0.497 at $T = 50$",
                   "a maximum relative difference of 3.3e-2",
                   "it is about 30 times slower", "it reaches 46 % of the peak", "50 million normals per second"):
        assert flagged_numbers(notebook(quoted), {}), quoted
    for fine in ("betas from $0.02$ to $0.3$", "### 8.1 How many steps?", "see section 8.2 and Exercise 2.1",
                 "the printed ratio says whether it is slower", "$201 \\times 10{,}000$ numbers",
                 "[a link](https://example.org/v0.1.0/x.ipynb)"):
        assert not flagged_numbers(notebook(fine), {}), fine
    assert not flagged_numbers(notebook("about 0.497"), {"0.497": "a reason"})
