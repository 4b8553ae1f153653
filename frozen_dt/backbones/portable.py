"""A slice's layers as a small quantized file, for machines that cannot install the backbone's package.

A GGUF backbone's package is mostly its token-embedding table (gemma3-270m: 178 of its 253 MB); a slice uses only
some layers. ``frozen-dt backbone export NAME --layers a:b --out FILE.gguf`` copies those layers' tensors, still
quantized and byte for byte (gemma3-270m 0:5: about 19 MB), with the model's metadata (no tokenizer) into a GGUF
file. ``frozen-dt backbone import FILE.gguf`` on the other machine dequantizes it through transformers' GGUF loader -
the same code that reads the package's file - and writes the slice to the backbone cache under the name a load of
``NAME a:b`` looks up, recording the package version it came from; a load then needs neither the package nor the
full file. The slice's tensors equal those of the package's own load exactly (tests/test_backbones.py).
"""

from __future__ import annotations

import gc
from pathlib import Path

from frozen_dt.backbones.catalog import BACKBONES, parse_layers
from frozen_dt.errors import FrozenDTError

KEY = "frozen_dt.slice"  # metadata prefix of an exported slice


def export_slice(name: str, layers: str, out: Path) -> Path:
    """Write layers ``layers`` of GGUF backbone ``name`` (its package installed) to ``out``, still quantized."""
    import gguf

    from frozen_dt.backbones import slice as slices
    from frozen_dt.paths import atomic_path

    if name not in BACKBONES:
        raise FrozenDTError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
    spec = BACKBONES[name]
    if slices._WEIGHTS[name][1] is None:
        raise FrozenDTError(f"{name} is not a GGUF backbone: its package installs as it is (pip)")
    a, b = parse_layers(layers, spec.n_layers)
    version = slices._package_version(spec)
    directory, gguf_file = slices._weights_location(spec)
    reader = gguf.GGUFReader(str(directory / gguf_file))
    arch = str(reader.fields["general.architecture"].contents())
    vocab = len(reader.fields["tokenizer.ggml.tokens"].contents()) if "tokenizer.ggml.tokens" in reader.fields else 0
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, suffix=".gguf") as tmp:
        writer = gguf.GGUFWriter(str(tmp), arch)
        for key, field in reader.fields.items():
            if key.startswith("GGUF.") or key == "general.architecture" or key.startswith("tokenizer.ggml."):
                continue  # the reader's own header fields; the tokenizer (a slice reads no tokens)
            kind = field.types[0]
            if kind == gguf.GGUFValueType.ARRAY:
                writer.add_key_value(key, field.contents(), kind, sub_type=field.types[-1])
            else:
                writer.add_key_value(key, field.contents(), kind)
        for key, value in {"backbone": name, "package": spec.package, "version": version, "layers": f"{a}:{b}",
                           "vocab_size": str(vocab)}.items():
            writer.add_string(f"{KEY}.{key}", value)
        for tensor in reader.tensors:
            parts = tensor.name.split(".")
            if parts[0] == "blk" and a <= int(parts[1]) < b:
                writer.add_tensor(tensor.name, tensor.data, raw_shape=tensor.data.shape, raw_dtype=tensor.tensor_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return out


def read_slice_record(path: Path) -> dict:
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as error:  # not a GGUF file, truncated
        raise FrozenDTError(f"{path} is not a readable GGUF file ({type(error).__name__}: {error})") from None
    record = {key[len(KEY) + 1:]: str(field.contents()) for key, field in reader.fields.items()
              if key.startswith(KEY + ".")}
    if set(record) != {"backbone", "package", "version", "layers", "vocab_size"}:
        raise FrozenDTError(f"{path} is not a slice written by 'frozen-dt backbone export'")
    return record


def import_slice(path: Path, cache_dir: Path | None = None) -> Path:
    """Dequantize an exported slice into the backbone cache; returns the cache file a load will read."""
    import torch

    from frozen_dt.backbones import slice as slices

    path = Path(path).expanduser()
    if not path.is_file():
        raise FrozenDTError(f"no such file: {path}")
    record = read_slice_record(path)
    name = record["backbone"]
    if name not in BACKBONES:
        raise FrozenDTError(f"{path}: unknown backbone {name!r}")
    spec = BACKBONES[name]
    a, b = parse_layers(record["layers"], spec.n_layers)
    verbosity = slices._transformers().logging.get_verbosity()
    slices._transformers().logging.set_verbosity_error()  # not the list of absent layers and token table
    try:
        full = slices._load_pretrained(path.parent, path.name, name)
    finally:
        slices._transformers().logging.set_verbosity(verbosity)
    model = slices._pretrained_slice(full, a, b)
    del full
    gc.collect()
    if int(record["vocab_size"]):
        model.config.vocab_size = int(record["vocab_size"])  # the package's (the exported file has no tokenizer)
    directory = Path(cache_dir).expanduser() if cache_dir is not None else slices.default_cache_dir()
    target = slices._cache_file(directory, spec, record["version"], a, b, "pretrained", 0)
    directory.mkdir(parents=True, exist_ok=True)
    slices._write_cache(target, model.to(torch.float32),
                        {"backbone": name, "package": spec.package, "version": record["version"],
                         "init": "pretrained", "seed": "0", "n_layers_total": str(spec.n_layers),
                         "imported_from": path.name}, (a, b))
    return target
