"""Import-time check of the ctypes struct mirrors against the C compiler's layout.

The library copy in this package carries a table of sizeof/offsetof values
(python/struct_layout.c, compiled with the library). Every struct the binding
passes is compared field by field; any difference raises ImportError, so a
header change the binding has not followed can never reach the library.
"""

import ctypes


def c_layout(lib):
    """The table the library reports: {"attn_params": size, "attn_params.scale": offset, ...}."""
    table = {}
    index = 0
    name = ctypes.c_char_p()
    value = ctypes.c_size_t()
    while lib.attn_py_struct_layout(index, ctypes.byref(name), ctypes.byref(value)):
        table[name.value.decode()] = value.value
        index += 1
    return table


def differences(table, structs, enums, enum_type):
    """Each mismatch between the mirrors and the table, as a sentence."""
    problems = []
    for c_name, mirror in structs.items():
        if c_name not in table:
            problems.append(f"{c_name}: the library reports no layout for it")
            continue
        if ctypes.sizeof(mirror) != table[c_name]:
            problems.append(f"sizeof({c_name}) is {table[c_name]} in C, "
                            f"{ctypes.sizeof(mirror)} in the binding")
        mirrored = set()
        for field, _ in mirror._fields_:
            key = f"{c_name}.{field}"
            mirrored.add(key)
            offset = getattr(mirror, field).offset
            if key not in table:
                problems.append(f"{key}: no such field in C")
            elif table[key] != offset:
                problems.append(f"offsetof({key}) is {table[key]} in C, {offset} in the binding")
        for key in table:
            if key.startswith(c_name + ".") and key not in mirrored:
                problems.append(f"{key}: in C, missing from the binding")
    for c_name in enums:
        if table.get(c_name) != ctypes.sizeof(enum_type):
            problems.append(f"sizeof({c_name}) is {table.get(c_name)} in C, "
                            f"{ctypes.sizeof(enum_type)} in the binding")
    return problems


def check(lib, structs, enums, enum_type):
    problems = differences(c_layout(lib), structs, enums, enum_type)
    if problems:
        raise ImportError("attn_cl: the binding's structs do not match the library's header: " +
                          "; ".join(problems))
