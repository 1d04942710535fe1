"""Generate safemodel_ci/data/torchscript_ops.json from torch's own operator registry.

Run once per torch release (``python tools/gen_torchscript_ops.py``); the scanner only reads the
JSON and never imports torch. The allowlist is every operator registered in the compute namespaces
(``aten``, ``prim``, ``quantized``, ``_quantized``, ``prepacked``) minus the operators that read or
write files, reach other processes, or re-point tensors at raw storage, which are listed apart with
the reason the scanner reports.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import torch

#: Namespaces whose operators are compute: ATen, the interpreter's primitives, quantized kernels
#: and the XNNPACK prepacked ops of mobile builds.
COMPUTE_NAMESPACES = ("aten", "prim", "quantized", "_quantized", "prepacked")

#: prepacked:: ops are registered only in XNNPACK builds (mobile); their schemas, from
#: aten/src/ATen/native/xnnpack/RegisterOpContextClass.cpp, are added when the registry lacks them.
PREPACKED = ("linear_clamp_prepack", "linear_clamp_run", "conv2d_clamp_prepack",
             "conv2d_transpose_clamp_prepack", "conv2d_clamp_run", "conv2d_transpose_clamp_run",
             "unpack_prepacked_sizes_conv2d", "unpack_prepacked_sizes_linear")

#: Registered operators that are not compute: CRITICAL wherever they appear.
DANGEROUS = {
    "aten::save": "writes a value to a file named by the code (torch.save inside TorchScript)",
    "aten::from_file": "maps any file named by the code into a tensor (reads files)",
    "prim::rpc_async": "calls a function on another process over torch.distributed.rpc",
    "prim::rpc_sync": "calls a function on another process over torch.distributed.rpc",
    "prim::rpc_remote": "creates an object on another process over torch.distributed.rpc",
}
#: Registered compute-namespace operators kept off the allowlist (HIGH): not file access, but not
#: pure computation on the op's own inputs either.
NOT_COMPUTE = {
    "aten::set_": "re-points a tensor at another storage, offset and size",
}
#: Constructors and views whose invariants torch does not check (sparse tensors are checked only
#: under torch.sparse.check_sparse_tensor_invariants, off by default; the nested/alias views take
#: offsets and strides as given): code that builds one with out-of-range indices or offsets makes
#: later compute ops (to_dense, matmul ...) read and write outside the tensor's memory, which is how
#: torch.load's own sparse-tensor memory corruption worked. Matched against the registry by name.
UNCHECKED = re.compile(r"aten::(_?sparse_(coo|csr|csc|bsr|bsc|compressed)_tensor(_unsafe|_with_dims\w*)?"
                       r"|sparse_resize_(and_clear_)?|_coalesced_|_nested_view_from_(buffer|jagged)(_copy)?"
                       r"|_reshape_alias(_copy)?)\Z")
UNCHECKED_REASON = ("builds a tensor or view whose indices, offsets or strides torch does not check; "
                    "out-of-range values make later ops read and write outside its memory")
#: Namespaces that mean distributed communication (process groups, RPC) or debugging loaders.
DANGEROUS_NAMESPACES = {
    "c10d": "collective communication with other processes (torch.distributed)",
    "_c10d_functional": "collective communication with other processes (torch.distributed)",
    "_c10d_functional_autograd": "collective communication with other processes (torch.distributed)",
    "symm_mem": "symmetric memory shared with other processes",
    "dist_c10d": "collective communication with other processes (torch.distributed)",
    "dist_rpc": "remote procedure calls to other processes (torch.distributed.rpc)",
    "dist_autograd": "distributed autograd over RPC",
    "debugprims": "loads tensors by name from outside the model (debugging)",
}
#: torch.classes namespaces whose classes only hold packed weights for compute kernels.
COMPUTE_CLASS_NAMESPACES = ("quantized", "rnn", "sparse", "mkldnn", "xnnpack", "onednn")


def main() -> int:
    schemas = torch._C._jit_get_all_schemas()
    for s in schemas:
        if UNCHECKED.match(s.name):
            NOT_COMPUTE.setdefault(s.name, UNCHECKED_REASON)
    ops: dict = {ns: set() for ns in COMPUTE_NAMESPACES}
    other_ns: set = set()
    fields: set = set()
    for s in schemas:
        ns, _, name = s.name.partition("::")
        if ns in ops:
            qual = f"{ns}::{name}"
            if qual not in DANGEROUS and qual not in NOT_COMPUTE:
                ops[ns].add(name)
            # Named results become namedtuple fields (torch.max(x, 1).values).
            fields.update(r.name for r in s.returns if r.name)
        else:
            other_ns.add(ns)
    if not ops["prepacked"]:
        ops["prepacked"].update(PREPACKED)
    registered = {s.name for s in schemas}
    for qual in (*DANGEROUS, *NOT_COMPUTE):
        if qual not in registered:
            print(f"warning: {qual} is not registered in torch {torch.__version__}", file=sys.stderr)

    classes: dict = {}
    for s in torch._C._jit_get_custom_class_schemas():
        cls = str(s.arguments[0].type)  # __torch__.torch.classes.<ns>.<Class>
        qual = cls.replace("__torch__.torch.classes.", "", 1)
        classes.setdefault(qual, set()).add(s.name)
    for name in ("LinearOpContext", "Conv2dOpContext", "TransposeConv2dOpContext"):
        classes.setdefault(f"xnnpack.{name}", set()).update({"__getstate__", "__setstate__"})
    compute_classes = {k: sorted(v) for k, v in sorted(classes.items())
                       if k.split(".", 1)[0] in COMPUTE_CLASS_NAMESPACES}
    other_classes = sorted(k for k in classes if k.split(".", 1)[0] not in COMPUTE_CLASS_NAMESPACES)

    data = {
        "generated_by": "tools/gen_torchscript_ops.py",
        "torch_version": torch.__version__,
        "compute_namespaces": list(COMPUTE_NAMESPACES),
        "ops": {ns: sorted(v) for ns, v in ops.items()},
        "dangerous_ops": DANGEROUS,
        "not_compute_ops": NOT_COMPUTE,
        "dangerous_namespaces": DANGEROUS_NAMESPACES,
        "other_registered_namespaces": sorted(other_ns - set(DANGEROUS_NAMESPACES)),
        "result_fields": sorted(fields),
        "compute_classes": compute_classes,
        "other_classes": other_classes,
    }
    out = Path(__file__).resolve().parent.parent / "safemodel_ci" / "data" / "torchscript_ops.json"
    out.write_text(json.dumps(data, indent=0, sort_keys=True) + "\n")
    total = sum(len(v) for v in data["ops"].values())
    print(f"{out}: {total} allowlisted ops ({', '.join(f'{k} {len(v)}' for k, v in data['ops'].items())}), "
          f"{len(DANGEROUS)} dangerous, {len(compute_classes)} compute classes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
