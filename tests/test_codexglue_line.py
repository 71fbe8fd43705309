"""codexglue-line on fixtures in the dataset's own format ({input, gt} JSONL), Java and Python.

Expected numbers are derived by hand from the official evaluator's definitions
(Code-Code/CodeCompletion-line/evaluator/evaluator.py): ES = fuzz.ratio = round(100 * 2 * LCS /
(len(pred) + len(gt))) on the post-processed strings, EM = equal whitespace-split token lists.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codelora.tasks import TaskOptions, get_task
from codelora.tasks.codexglue_line import stop_at_first_line_end
from codelora.tasks.codexglue_tokens import java_line_tokens, java_statement_end, kotlin_line_tokens, python_line_tokens

# javaCorpus: whole files on one line, no <EOL>; gts end at ; or } (kept) or before { (dropped)
JAVA = [
    ({"input": "<s> class A { int f ( int n ) { int s = <NUM_LIT:0> ; for ( int i = <NUM_LIT:0> ; i < n ;",
      "gt": "i ++ )"}, "i++) {\n            s += i;"),
    ({"input": "<s> class B { boolean g ( boolean a , boolean b , boolean c ) { boolean ok =", "gt": "a && b || c ;"},
     "a&&b||c; return ok; }"),
    ({"input": "<s> class C { void h ( ) { int x = <NUM_LIT:1> ;", "gt": "x -- ;"}, " x--; x++;"),
    ({"input": "<s> class D { void p ( List < String > list ) {", "gt": "list . forEach ( System . out :: println ) ;"},
     "list.forEach(System.out::println);"),
    ({"input": "<s> class E { int q ( int x ) {", "gt": "int y = x > > > <NUM_LIT:3> ;"}, "int y = x >>> 3;"),
    ({"input": "<s> class F { int r ( int a , int b ) {", "gt": "return a + b ;"}, "return a;"),
    ({"input": "<s> class G { String t ( ) {", "gt": "String s = \"<STR_LIT>\" ;"}, 'String s = "hello";'),
]

# py150: lines separated by <EOL>; gts are the rest of the line, without <EOL>
PYTHON = [
    ({"input": "<s> import numpy as np <EOL> def f ( x ) : <EOL> return np . clip ( x ,",
      "gt": "<NUM_LIT:1e-5> , <NUM_LIT:1> )"}, " 1e-5, 1)\nprint(f(2))"),
    ({"input": "<s> def half ( x ) : <EOL>", "gt": "return x * <NUM_LIT:.5>"}, "return x*.5\n"),
    ({"input": "<s> class T ( TestCase ) : <EOL> def test ( self ) : <EOL>",
      "gt": "self . assertEqual ( x , '<STR_LIT>' )"}, "self.assertEqual(x, 'abc')\n"),
    ({"input": "<s> def g ( x ) : <EOL>", "gt": "return x"}, "\nreturn x  # done\n"),
    ({"input": "<s> with open ( p ) as f : <EOL>", "gt": "for line in f :"}, "for l in f:\n"),
]


def cfg(path: Path, language: str = "auto") -> TaskOptions:
    return TaskOptions(codexglue_line_data=str(path), codexglue_line_language=language)


def load(tmp_path: Path, rows, language: str = "auto"):
    path = tmp_path / "line.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r, _ in rows), encoding="utf-8")
    task = get_task("codexglue-line", cfg(path, language))
    examples = task.load()
    predictions = []
    for ex, (_, generated) in zip(examples, rows):  # what generation keeps: cut by the stop rule
        cut = task.stop_rule(ex)(generated)
        predictions.append(generated if cut is None else generated[:cut])
    return task, examples, predictions


def test_java_lines_score_as_the_evaluator(tmp_path):
    task, examples, preds = load(tmp_path, JAVA)
    assert task.language == "java" and task.describe()["language"] == "java (detected)"
    assert task.describe()["table_note"] == ("java (detected); a completion ends at the first ; or } (kept) or { "
                                             "(dropped); predictions re-spaced with javalang (javaCorpus's); "
                                             "decoding: greedy; ES/EM with literals normalised like the "
                                             "references, (raw) as generated")
    per, corpus = task.score(examples, preds)
    assert [r["em"] for r in per] == [1, 1, 1, 1, 1, 0, 1]
    # "return a ;" vs "return a + b ;": LCS 10 of 10 + 14 characters -> 20/24 -> 83
    assert [r["es"] for r in per] == [100, 100, 100, 100, 100, 83, 100]
    # raw, "hello" stays: 'String s = "hello" ;' vs 'String s = "" ;': LCS 15 -> 30/35 -> 86
    assert [r["em_raw"] for r in per] == [1, 1, 1, 1, 1, 0, 0]
    assert [r["es_raw"] for r in per] == [100, 100, 100, 100, 100, 83, 86]
    assert corpus == {"es": round((600 + 83) / 7, 2), "em": round(600 / 7, 2),
                      "es_raw": round((500 + 83 + 86) / 7, 2), "em_raw": round(500 / 7, 2), "n": 7}
    files = task.evaluator_files(examples, preds)
    assert files["predictions.txt"].splitlines() == [
        "i ++ )", "a && b || c ;", "x -- ;", "list . forEach ( System . out :: println ) ;",
        "int y = x > > > <NUM_LIT:3> ;", "return a ;", 'String s = "<STR_LIT>" ;']
    raw = files["predictions_raw.txt"].splitlines()
    assert raw[4:] == ["int y = x > > > 3 ;", "return a ;", 'String s = "hello" ;']
    assert [json.loads(line) for line in files["answers.json"].splitlines()] == [r for r, _ in JAVA]


def test_python_lines_score_as_the_evaluator(tmp_path):
    task, examples, preds = load(tmp_path, PYTHON)
    assert task.language == "python"
    per, corpus = task.score(examples, preds)
    assert [r["em"] for r in per] == [1, 1, 1, 1, 0]
    # "for l in f :" vs "for line in f :": LCS 12 of 12 + 15 characters -> 24/27 -> 89
    assert [r["es"] for r in per] == [100, 100, 100, 100, 89]
    # raw, 'abc' stays: "self . assertEqual ( x , 'abc' )" (32) vs the 29-character gt: LCS 29 -> 95
    assert [(r["es_raw"], r["em_raw"]) for r in per] == [(100, 1), (100, 1), (95, 0), (100, 1), (89, 0)]
    assert corpus == {"es": round((400 + 89) / 5, 2), "em": 80.0, "es_raw": round((395 + 89) / 5, 2),
                      "em_raw": 60.0, "n": 5}
    files = task.evaluator_files(examples, preds)
    assert files["predictions.txt"].splitlines() == [
        "<NUM_LIT:1e-5> , <NUM_LIT:1> )", "return x * <NUM_LIT:.5>", "self . assertEqual ( x , '<STR_LIT>' )",
        "return x", "for l in f :"]
    assert files["predictions_raw.txt"].splitlines() == [
        "1e-5 , 1 )", "return x * .5", "self . assertEqual ( x , 'abc' )", "return x", "for l in f :"]


def test_a_line_break_inside_a_literal_stays_on_one_prediction_line(tmp_path):
    task, examples, _ = load(tmp_path, JAVA[:2])
    files = task.evaluator_files(examples, ['String s = "a\rb";', 'x = "\u2028";'])
    path = tmp_path / "predictions.txt"
    path.write_text(files["predictions.txt"], encoding="utf-8")
    with open(path, encoding="utf-8") as handle:  # read as the evaluator reads it
        assert handle.readlines() == ['String s = "<STR_LIT>" ;\n', 'x = "<STR_LIT>" ;\n']
    raw = [line for line in files["predictions_raw.txt"].split("\n") if line]
    assert raw == ['String s = "a b" ;', 'x = "\u2028" ;']


def test_language_option_overrides_detection(tmp_path):
    task, examples, preds = load(tmp_path, PYTHON[:1], language="java")
    assert task.language == "java" and task.describe()["language"] == "java (--codexglue-line-language)"
    # with java's stop rule the python line runs on past its newline to the first ; { or }
    assert task.stop_rule(examples[0])("1)\nx = 2;") == len("1)\nx = 2;")


def test_a_prediction_already_in_the_datasets_spacing_is_unchanged():
    for gt in ["i ++ )", "a && b || c ;", "x -- ;", "String :: valueOf", "x > > > 3 ;", "a >>>= 1 ;",
               "List < List < String > > l ;", "double d = 1e-5 + .5 ;", 'foo ( "a b" , \'c\' ) ;']:
        assert java_line_tokens(gt) == gt
    for gt in ["1e-5 , 1 )", "return x * .5", "self . f ( ** kw ) [ - 1 : ]", "x //= 2", "f ( 'a b' , \"\" )"]:
        assert python_line_tokens(gt) == gt


def test_java_shift_operators_follow_the_data(tmp_path):
    # javalang (javaCorpus's tokenizer) splits >>> into > > >; data that writes >>> is followed
    rows = [({"input": "<s> class E { int q ( int x ) { int z = x >>> <NUM_LIT:1> ;",
              "gt": "int y = x >>> <NUM_LIT:3> ;"},
             "int y = x >>> 3;")]
    task, examples, preds = load(tmp_path, rows)
    assert task.join_shifts and task.score(examples, preds)[0] == [{"es": 100, "em": 1, "es_raw": 100, "em_raw": 1}]
    assert java_line_tokens("List<List<String>> l", join_shifts=True) == "List < List < String >> l"


@pytest.mark.parametrize(("text", "kept"), [
    ("return x ; y", "return x ;"),
    ("if ( a ) { b", "if ( a ) "),
    ("} else {", "}"),
    ('s = "a;b{}" + c ;', 's = "a;b{}" + c ;'),
    ("c = ';' ;", "c = ';' ;"),
    ('s = "a;', None),  # the literal may still close
    ("x /* ; */ + y // ;\n ;", "x /* ; */ + y // ;\n ;"),
    ("x /* ;", None),
    ("a + b", None),
])
def test_java_stop_rule(text, kept):
    cut = java_statement_end(text)
    assert (None if cut is None else text[:cut]) == kept


def test_python_stop_rule_skips_leading_blank_lines():
    assert stop_at_first_line_end("\n\n") is None
    assert stop_at_first_line_end("\n  \nreturn x\nmore") == len("\n  \nreturn x")
    assert stop_at_first_line_end("x = 1") is None


def test_kotlin_line_tokens():
    assert kotlin_line_tokens("for (i in 0..<n) sum += a[i]!! // c") == "for ( i in 0 ..< n ) sum += a [ i ] !!"
    assert kotlin_line_tokens('val s = "a b" + x?.y ?: 1e-5') == 'val s = "a b" + x ?. y ?: 1e-5'
    assert kotlin_line_tokens("i++) {") == "i ++ ) {"


def test_heldout_line_mode_scores_kotlin_lines_like_codexglue_line(tmp_path):
    # our own held-out split in `line` mode: reference and prediction in one token spacing, so
    # `for(i in 0 until n){` is the reference `for (i in 0 until n) {` word for word
    from datasets import Dataset, DatasetDict

    from codelora.tasks import get_task

    rows = {"prompt": ["fun f(n: Int) {\n    ", "val x = ", "def f():\n    "],
            "completion": ["for (i in 0 until n) {", "a?.b ?: listOf<Int>()", "return x[1:]  # tail"],
            "path": ["src/A.kt", "src/B.kt", "tools/c.py"], "repo": ["r", "r", "r"]}
    DatasetDict({"test": Dataset.from_dict(rows)}).save_to_disk(str(tmp_path / "ds"))
    (tmp_path / "ds" / "stats.json").write_text(json.dumps({"windowing": {"mode": "line"}}))
    task = get_task("heldout", TaskOptions(dataset=str(tmp_path / "ds"), heldout_split="test"))
    examples = task.load()
    per, corpus = task.score(examples, ["for(i in 0 until n){", "a?.b?:listOf<Int>( )", "return x[1 :]"])
    assert [r["em"] for r in per] == [1, 1, 1] and [r["es"] for r in per] == [100, 100, 100]
    assert corpus["em"] == 100.0 and "line_scoring" in task.describe()
    # "a ?. c" vs "a ?. b ?: listOf < Int > ( )": a wrong line still scores below 100
    per, _ = task.score(examples[1:2], ["a?.c"])
    assert per[0]["em"] == 0 and per[0]["es"] < 100


def test_literal_list_file_decides_which_literals_are_kept(tmp_path):
    lits = tmp_path / "literals.json"
    lits.write_text(json.dumps({"str": ["abc"], "num": [], "char": []}))
    path = tmp_path / "line.jsonl"
    path.write_text(json.dumps(PYTHON[2][0]) + "\n", encoding="utf-8")
    task = get_task("codexglue-line", TaskOptions(codexglue_line_data=str(path), codexglue_line_language="python",
                                                      codexglue_line_literals=str(lits)))
    examples = task.load()
    # 'abc' is a listed literal, so the dataset would have kept it: it no longer matches the gt's ''
    assert task.score(examples, ["self.assertEqual(x, 'abc')"])[0] == [{"es": 95, "em": 0, "es_raw": 95, "em_raw": 0}]
    assert task.describe()["literals"] == "literals.json (literals.json): 1 str, 0 num, 0 char"
