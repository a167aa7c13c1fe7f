"""The import-time layout check: it sees every struct, and it fails on a mismatch."""

import ctypes

from attn_cl import _layout, _native


def test_library_reports_every_mirrored_struct():
    table = _layout.c_layout(_native.lib)
    for c_name, mirror in _native.STRUCTS.items():
        assert table[c_name] == ctypes.sizeof(mirror)
        for field, _ in mirror._fields_:
            assert table[f"{c_name}.{field}"] == getattr(mirror, field).offset
    assert table["attn_params"] == _native.new_params(1, 1, 1, 1, 1).struct_size


def test_a_moved_field_is_reported():
    table = _layout.c_layout(_native.lib)
    table["attn_params.softcap"] += 4
    table["attn_window.extra"] = 12
    problems = _layout.differences(table, _native.STRUCTS, _native.ENUMS, _native.c_enum)
    assert any("offsetof(attn_params.softcap)" in p for p in problems)
    assert any("attn_window.extra: in C, missing from the binding" in p for p in problems)


def test_a_resized_struct_is_reported():
    table = _layout.c_layout(_native.lib)
    table["attn_host_tensors"] += 8
    problems = _layout.differences(table, _native.STRUCTS, _native.ENUMS, _native.c_enum)
    assert problems == [f"sizeof(attn_host_tensors) is {table['attn_host_tensors']} in C, "
                        f"{table['attn_host_tensors'] - 8} in the binding"]
