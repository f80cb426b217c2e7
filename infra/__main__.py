"""`pulumi up` entrypoint: only composes the stack and exports the outputs contract."""

import pulumi

from infra.config import load
from infra.program import build

for key, value in build(load(pulumi.get_stack())).items():
    pulumi.export(key, value)
