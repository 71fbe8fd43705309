"""Licence-header stripping and the file filters of preprocess_data.py."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codelora.cleaning import (clean_text, longest_digit_run, longest_token_over, normalize_whitespace,
                               strip_license_header)

BODY = "package demo\n\nfun main() {\n    println(1)\n    println(2)\n}\n"


@pytest.mark.parametrize("header", [
    "/*\n * Copyright 2010-2024 JetBrains s.r.o.\n * Use of this source code is governed by the Apache 2.0 license.\n */\n",
    "/**\n * Licensed to the Apache Software Foundation (ASF)\n */\n\n\n",
    "// Copyright (c) 2023 Example\n// SPDX-License-Identifier: MIT\n\n",
    "# Copyright (C) 2001-2007 Python Software Foundation\n# Author: Barry Warsaw\n#\n",
    "/* (c) 2019 Someone. All rights reserved. */\n",
    "/*\r\n * Copyright 2020 CRLF Corp\r\n */\r\n\r\n",
    # two notices in a row are both removed
    "/* Copyright 2001 A */\n\n// Licensed under the MIT License\n\n",
])
def test_license_header_removed(header):
    text, stripped = strip_license_header(header + BODY)
    assert stripped and text == BODY


def test_header_kept_when_not_a_licence_or_not_at_top():
    doc = "/**\n * Utilities for greeting people.\n */\n" + BODY
    assert strip_license_header(doc) == (doc, False)
    later = BODY + "/* Copyright 2020 X */\n"
    assert strip_license_header(later) == (later, False)
    # C preprocessor lines are not `#` comments, even when they mention a licence file
    c_file = '#include "license.h"\nint main(void) { return 0; }\n'
    assert strip_license_header(c_file) == (c_file, False)
    # code on the closing line of the comment: leave the file alone
    shared = "/* Copyright 2020 X */ val x = 1\n" + BODY
    assert strip_license_header(shared) == (shared, False)
    unterminated = "/* Copyright 2020 X\n" + BODY
    assert strip_license_header(unterminated) == (unterminated, False)


def test_shebang_and_bom_survive():
    text = "\ufeff#!/usr/bin/env kotlin\n// Copyright 2020 X\n\nprintln(1)\n"
    assert strip_license_header(text) == ("\ufeff#!/usr/bin/env kotlin\nprintln(1)\n", True)
    py = "#!/usr/bin/env python3\n# Copyright 2001 PSF\n# Licensed under PSF\n\nimport os\n"
    assert strip_license_header(py) == ("#!/usr/bin/env python3\nimport os\n", True)


def test_filters_in_order_with_reasons():
    lic = "// Copyright 2024 X\n"
    assert clean_text(lic + BODY).text == BODY
    assert clean_text(lic + BODY).license_stripped
    assert clean_text(lic + BODY, strip_license=False).text == lic + BODY
    short = clean_text(lic + "fun a() = 1\n\n\n\nfun b() = 2\n")
    assert (short.text, short.reason, short.license_stripped) == (None, "too_few_lines", True)
    digits = BODY + "val t = " + "7" * 201 + "\n"
    assert clean_text(digits).reason == "long_digit_run"
    assert clean_text(digits, max_digit_run=300).reason is None
    blob = BODY + "val b = \"" + "QUJD" * 130 + "\"\n"  # ~530-char token (base64-ish data)
    assert clean_text(blob).reason == "long_token"
    assert clean_text(blob, max_token_chars=1000).reason is None
    eos = BODY + 'val s = "<|endoftext|>"\n'
    assert clean_text(eos, special_tokens=("<|endoftext|>",)).reason == "special_token_text"
    assert clean_text(eos).reason is None


def test_normalize_whitespace():
    assert normalize_whitespace("fun a()  {\n\treturn 1\r\n}\n") == normalize_whitespace("fun a() {\n return 1 }")


def test_header_after_leading_file_annotations_is_stripped():
    header = "/*\n * Copyright 2014-2024 JetBrains s.r.o and contributors. Apache 2.0 license.\n */\n\n"
    one = '@file:Suppress("unused")\n\n'
    assert strip_license_header(one + header + BODY) == (one + BODY, True)
    several = '@file:JvmName("Names")\n@file:Suppress(\n    "DEPRECATION",\n    "unused",\n)\n'
    assert strip_license_header(several + header + BODY) == (several + BODY, True)
    # an annotation with no licence after it: the file is untouched
    plain = one + "/** Docs of this file. */\n\n" + BODY
    assert strip_license_header(plain) == (plain, False)


def test_doc_comment_of_a_declaration_after_the_header_stays():
    header = "/*\n * Copyright 2020 Example Corp. Licensed under the Apache License 2.0.\n */\n\n"
    kdoc = "/**\n * Reads a license file and reports its SPDX id.\n */\nclass LicenseReader\n"
    assert strip_license_header(header + kdoc) == (kdoc, True)
    # also when the documented declaration comes first, with no header at all
    assert strip_license_header(kdoc) == (kdoc, False)
    line_doc = "// Copyright (c) 2020 X\n\n// license checks live here\nfun checkLicense() = Unit\n"
    assert strip_license_header(line_doc) == ("// license checks live here\nfun checkLicense() = Unit\n", True)


def test_crlf_line_ends_become_lf():
    crlf = "// Copyright 2020 X\r\n\r\n" + BODY.replace("\n", "\r\n")
    res = clean_text(crlf)
    assert res.text == BODY and res.license_stripped
    old_mac = BODY.replace("\n", "\r")
    assert clean_text(old_mac).text == BODY


# digits, every kind of space str.split() knows (ASCII and not), word characters, multi-byte ones
RUN_ALPHABET = "0123456789 \t\n\x0b\x0c\r\x1c\x1f\x85\xa0\u2003a_é€😀٣"


@settings(max_examples=500, deadline=None)
@given(text=st.text(alphabet=RUN_ALPHABET, max_size=60), limit=st.integers(0, 8))
def test_run_checks_equal_their_plain_definitions(text, limit):
    """The byte-table checks give what a regex over ASCII digits and str.split() give."""
    assert longest_digit_run(text, limit) == (re.search("[0-9]{%d}" % (limit + 1), text) is not None)
    assert longest_token_over(text, limit) == (max(map(len, text.split()), default=0) > limit)


def test_has_code_lines_is_the_plain_count():
    """has_code_lines looks at a prefix first; it must answer what counting every line answers,
    also when the prefix ends inside a line, holds only blank lines, or the lines end in the
    other separators str.splitlines knows."""
    import random

    from codelora.cleaning import HEAD_CHARS, count_code_lines, has_code_lines

    rnd = random.Random(3)
    pieces = ["x", "  ", "\n", "\n\n", "\t\n", "fun f() {}", "\u2028", "\x0c", "é", " " * 300]
    texts = ["", "\n" * 10, "a\nb\nc\nd", "a\nb\nc\nd\ne", " " * (HEAD_CHARS - 2) + "\nx\ny\nz\nw\nv",
             "a\n" * 4 + " " * HEAD_CHARS + "b", "a\n" * 3 + "b" * (HEAD_CHARS * 2) + "\nc\n"]
    texts += ["".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 60))) for _ in range(3000)]
    texts += [" " * rnd.randint(HEAD_CHARS - 20, HEAD_CHARS + 20)
              + "\n".join("q" * rnd.randint(0, 3) for _ in range(6)) for _ in range(300)]
    for text in texts:
        for n in (1, 5, 8):
            assert has_code_lines(text, n) == (count_code_lines(text) >= n), (text, n)
