"""Every bound gradgen puts on a spec, in one place (README: "Everything is bounded").

gradgen runs in build pipelines on specs that arrive in pull requests, so each
resource a hostile spec could exhaust has a limit, checked where the input is read
and refused with a located message. This module imports nothing: every stage reads
its limits from here.
"""

from __future__ import annotations

# -- the file and its YAML (load.py) --------------------------------------------------
#: bytes in a spec file: a real spec is a few hundred; PyYAML scans ~250 KiB/s
MAX_BYTES = 1 << 18  # 256 KiB
#: nesting of YAML mappings and lists (YAML aliases are refused outright)
MAX_DEPTH = 50
#: problems reported from one file before reading stops
MAX_ERRORS = 100
#: characters in one YAML number: sexagesimal ints ("1:2:3:...") cost quadratic time
MAX_NUMBER_CHARS = 1000

# -- the spec's structure (spec.py) ---------------------------------------------------
#: axes of an input or a param
MAX_RANK = 6
#: names in one section (`inputs`, `params`, `define`, `outputs`)
MAX_ENTRIES = 1000
#: characters of `doc`
MAX_DOC = 10_000
#: characters of the module name; the file name adds `.py`
MAX_MODULE_NAME = 100

# -- expressions (parse.py) -----------------------------------------------------------
#: characters in one expression
MAX_LENGTH = 10_000
#: nesting of parentheses, calls, unary and right-hand operands in an expression
MAX_EXPRESSION_DEPTH = 64
#: |k| in x ** k for a constant k
MAX_EXPONENT = 1000
#: elements of a vector literal `[a, b, ...]` (or a YAML list)
MAX_VECTOR = 1000

# -- the graph and the generated module (model.py) ------------------------------------
#: operations in one spec's graph, before differentiation. The examples have under a
#: hundred; generating takes about half a millisecond per operation (most of it
#: formatting the code), so this keeps a hostile spec to a couple of seconds.
MAX_NODES = 4000
#: operations the generated module prints: each function prints what its result
#: needs, the loss twice (value; value and gradients), each output once for its value
#: and once more per param for its Jacobian. Bounds a spec of a thousand small
#: outputs as MAX_NODES bounds one of a few huge expressions.
MAX_PRINTED = 8000
