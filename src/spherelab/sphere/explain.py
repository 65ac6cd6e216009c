"""A printable account of a model's scale invariance: which layers are SI as the model stands,
which are not and why, and what ``make_scale_invariant`` would leave non-SI."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from spherelab.sphere.calls import Example, Output
from spherelab.sphere.check import layer_candidates
from spherelab.sphere.graph import find_si_parameters, norm_layers, owned_parameters
from spherelab.sphere.recipe import FREE_PARAMETER, non_si_leftovers, recipe_plan
from spherelab.sphere.tracing import trace


@dataclass(frozen=True)
class SIReport:
    """``si``: SI layer -> its parameters (weight and bias scaled together), as the model
    stands; ``not_si``: every other trainable parameter -> why; ``head``: the layer the recipe
    would freeze; ``recipe_leftovers``: trainable parameters that would stay non-SI after
    ``make_scale_invariant`` (empty: the recipe makes the model fully SI). ``str()`` prints it."""

    model: str
    method: str  # how the graph was traced: torch.fx | torch.export
    seconds: float  # time to trace
    si: dict[str, list[str]]
    not_si: dict[str, str]
    norms: list[str]
    head: str
    recipe_leftovers: dict[str, str]

    @property
    def fully_si_after_recipe(self) -> bool:
        return not self.recipe_leftovers

    def __str__(self) -> str:
        lines = [
            f"{self.model}: traced with {self.method} in {self.seconds:.2f} s; "
            f"{len(self.norms)} normalization layers",
            f"SI layers as the model stands ({len(self.si)}):",
            *(f"  {layer}: {', '.join(names)}" for layer, names in self.si.items()),
            f"trainable parameters that are not SI ({len(self.not_si)}):",
            *(f"  {name}: {reason}" for name, reason in self.not_si.items()),
        ]
        if self.fully_si_after_recipe:
            lines.append(
                f"make_scale_invariant makes it fully SI (head '{self.head}' frozen, norm "
                "affine parameters and biases before norms removed)"
            )
        else:
            lines.append(
                f"make_scale_invariant (head '{self.head}') would refuse; still not SI "
                f"({len(self.recipe_leftovers)}):"
            )
            lines += [f"  {name}: {reason}" for name, reason in self.recipe_leftovers.items()]
        return "\n".join(lines)


def explain_scale_invariance(
    model: nn.Module,
    example: Example | None = None,
    *,
    output: Output = None,
    head: nn.Linear | None = None,
) -> SIReport:
    """Trace ``model`` (on ``example``, see make_scale_invariant) and report, for every
    trainable parameter, whether it is SI and why not; changes nothing. ``print()`` it."""
    graph = trace(model, example, output)
    candidates = layer_candidates(model, graph.layers())
    kept, dropped = find_si_parameters(graph, candidates)
    names = {id(p): n for n, (_, p) in owned_parameters(model).items()}
    si = {layer: [names[id(p)] for p in candidates[layer]] for layer in kept}
    norm_ids = {id(m) for m in norm_layers(model)}
    norms = {name for name, m in model.named_modules() if id(m) in norm_ids}
    not_si = {}
    for p_name, (owner, p) in owned_parameters(model).items():
        if p.requires_grad and owner not in kept:
            not_si[p_name] = (
                "affine parameter of a normalization (make_scale_invariant removes it)"
                if owner in norms
                else dropped.get(owner, FREE_PARAMETER)
            )
    head_name, recipe_kept, recipe_dropped = recipe_plan(model, graph, head)
    return SIReport(
        model=type(model).__name__,
        method=graph.method,
        seconds=graph.seconds,
        si=si,
        not_si=not_si,
        norms=sorted(norms),
        head=head_name,
        recipe_leftovers=non_si_leftovers(model, recipe_kept, head_name, recipe_dropped),
    )
