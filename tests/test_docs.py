"""docs/derivation.md against the code it describes.

The rule table must list exactly the ops of `gradgen.rules.RULES`, the kink section
every piecewise-constant op, and every number the notes quote for a worked example is
parsed from the text and compared with a module freshly generated from the example's
spec, so the notes cannot drift from the code.
"""

from __future__ import annotations

import ast
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from conftest import GENERATED_DIR, ROOT, generate_and_import

from gradgen.rules import RULES, STEPWISE

DOC = ROOT / "docs" / "derivation.md"
NUMBER = r"-?\d+(?:\.\d+)?"

Generated = Callable[[str], ModuleType]


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    """The module generated now from `examples/<stem>.yaml`, imported (once each)."""
    out = tmp_path_factory.mktemp("docs")
    made: dict[str, ModuleType] = {}

    def get(stem: str) -> ModuleType:
        if stem not in made:
            spec = ROOT / "examples" / f"{stem}.yaml"
            made[stem] = generate_and_import(spec, out)[0]
        return made[stem]

    return get


def section(text: str, number: int) -> str:
    """The text of `## <number>. ...` up to the next `## ` heading."""
    match = re.search(rf"^## {number}\. .*?(?=^## |\Z)", text, re.M | re.S)
    assert match is not None, f"docs/derivation.md has no section `## {number}.`"
    return match.group(0)


def agrees(value: float, quoted: str) -> bool:
    """`value` rounds to the number as quoted (to its last digit; an integer exactly)."""
    decimals = len(quoted.partition(".")[2])
    tolerance = 0.5 * 10.0**-decimals if decimals else 0.0
    return math.isclose(
        value, float(quoted), rel_tol=4 * sys.float_info.epsilon, abs_tol=tolerance
    )


def test_rule_table_lists_exactly_the_rules(doc: str) -> None:
    rows = re.findall(r"^\| `(\w+)` \|", section(doc, 3), re.M)
    assert len(rows) == len(set(rows)), "an op has two rows"
    assert set(rows) == set(RULES), (
        f"missing from the table: {sorted(set(RULES) - set(rows))}; "
        f"not in RULES: {sorted(set(rows) - set(RULES))}"
    )


def test_kink_section_names_every_stepwise_op(doc: str) -> None:
    kinks = section(doc, 5)
    missing = sorted(op for op in STEPWISE if f"`{op}`" not in kinks)
    assert not missing, f"section 5 does not mention {missing}"


def test_notes_cite_no_outside_file(doc: str) -> None:
    assert "MATH.md" not in doc and "../shared" not in doc


def test_nested_chain_value(doc: str, generated: Generated) -> None:
    quoted = re.findall(
        rf"At \$x = ({NUMBER})\$: \$6 \\cot ({NUMBER}) \\approx ({NUMBER})\$",
        section(doc, 1),
    )
    assert quoted, "section 1 quotes no value of 6 cot x"
    m = generated("nested_chain")
    for x_text, cot_arg, value in quoted:
        x = float(x_text)
        assert float(cot_arg) == x**3
        assert agrees(6 * x**2 / math.tan(x**3), value)  # the closed form
        assert agrees(float(m.gradients(x).x), value)  # reverse mode
        assert agrees(float(m.jacobian_y(x).x), value)  # forward mode


def test_total_derivative_values(doc: str, generated: Generated) -> None:
    quoted = re.findall(
        rf"at \$x = ({NUMBER})\$: \$1 \+ 2x = ({NUMBER})\$ "
        rf"\(the naive \$2x\$ gives ({NUMBER})\)",
        section(doc, 2),
        re.I,
    )
    assert len(quoted) >= 2, "section 2 quotes too few values of 1 + 2x"
    m = generated("total_derivative")
    for x_text, value, naive in quoted:
        x = float(x_text)
        assert agrees(1 + 2 * x, value) and agrees(2 * x, naive)
        assert not agrees(2 * x, value)
        assert agrees(float(m.gradients(x).x), value)
        assert agrees(float(m.jacobian_sum_path(x).x), value)


def test_vector_chain_values(doc: str, generated: Generated) -> None:
    quoted = re.findall(
        rf"At \$x = ({NUMBER})\$: \$\[([^\]$]+)\]\$", section(doc, 2), re.I
    )
    assert quoted, "section 2 quotes no value of the vector chain rule"
    m = generated("vector_chain")
    for x_text, values in quoted:
        x = float(x_text)
        numbers = [v.strip() for v in values.split(",")]
        jacobian = np.asarray(m.jacobian_y(x).x, dtype=float)
        closed_form = [2 / x, 3 * math.cos(3 * x)]
        assert jacobian.shape == (len(numbers),) == (2,)
        for got, expected, text in zip(jacobian, closed_form, numbers, strict=True):
            assert agrees(float(got), text) and agrees(expected, text)


def quoted_code(doc: str) -> str:
    block = re.search(r"```python\n(.*?)```", section(doc, 7), re.S)
    assert block is not None, "section 7 quotes no generated code"
    return block.group(1)


def function_lines(path: Path, name: str) -> list[str]:
    text = path.read_text(encoding="utf-8")
    start = text.index(f"\ndef {name}(")
    end = text.find("\ndef ", start + 1)
    return text[start:end].splitlines()


def test_relu_neuron_lines_are_verbatim(doc: str) -> None:
    lines = [line for line in quoted_code(doc).splitlines() if line.strip()]
    assert lines
    body = function_lines(GENERATED_DIR / "relu_neuron.py", "loss_and_gradients")
    at = 0
    for line in lines:  # every line, in the file's order
        assert line in body[at:], f"not in generated/relu_neuron.py: {line!r}"
        at = body.index(line, at) + 1


def test_relu_neuron_line_table_quotes_the_code(doc: str) -> None:
    code = quoted_code(doc)
    table = re.search(
        r"^\| line \| formula \|\n(.*?)\n\n", section(doc, 7), re.M | re.S
    )
    assert table is not None
    snippets = re.findall(
        r"`([^`]+)`",
        "\n".join(row.split(" | ")[0] for row in table.group(1).splitlines()[1:]),
    )
    assert len(snippets) >= 6
    for snippet in snippets:
        assert snippet in code, snippet


def test_relu_neuron_test_vector(doc: str, generated: Generated) -> None:
    rows = dict(re.findall(r"^\| (\$[^|]+\$) \| `([^`]+)` \|$", section(doc, 7), re.M))
    value = {k: ast.literal_eval(v) for k, v in rows.items()}
    X, y, w = (np.asarray(value[k], dtype=float) for k in ("$X$", "$y$", "$w$"))
    loss, grads = generated("relu_neuron").loss_and_gradients(X, y, w, value["$b$"])
    assert agrees(loss, rows["$C$"])
    for got, text in zip(
        grads.w, rows[r"$\partial C/\partial w$"].strip("[]").split(","), strict=True
    ):
        assert agrees(float(got), text.strip())
    assert agrees(float(grads.b), rows[r"$\partial C/\partial b$"])
