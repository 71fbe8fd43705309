"""The files beside an exported GGUF that put it in an editor: an Ollama Modelfile, Tabby's
tabby.json, and snippets for Continue and llama.vscode, with the commands in EDITORS.md.

Every one of them spells the model's own FIM sentinels in PSM order (codelora.fim), the order
codelora trains and the order llama-server's `/infill` builds:
- Ollama does FIM only when the Modelfile's TEMPLATE has an `{{ if .Suffix }}` branch; the stop
  tokens keep a completion from running into a sentinel or past EOS;
- Continue's autocomplete `template` takes `{{{prefix}}}` / `{{{suffix}}}` (Handlebars, unescaped);
- Tabby reads `prompt_template` with `{prefix}` / `{suffix}` from tabby.json in the model folder;
- llama.vscode (and llama.vim) call llama-server's `/infill`, which reads the FIM token ids from the
  GGUF's metadata: they need only the server's address.
A model without FIM tokens gets a plain completion template and no infill snippets.
"""

from __future__ import annotations

import json
from pathlib import Path

from codelora.utils import atomic_file

PORT = 8012  # llama.vscode's default endpoint port


def modelfile(gguf_name: str, fim: tuple[str, str, str] | None, eos: str | None) -> str:
    stops = [s for s in (*(fim or ()), eos) if s]
    if fim:
        p, s, m = fim
        template = (f'{{{{- if .Suffix }}}}{p}{{{{ .Prompt }}}}{s}{{{{ .Suffix }}}}{m}'
                    '{{- else }}{{ .Prompt }}{{- end }}')
    else:
        template = "{{ .Prompt }}"
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{template}"""', "PARAMETER temperature 0",
             "PARAMETER num_predict 128"]
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    return "\n".join(lines) + "\n"


def editor_files(name: str, gguf_name: str, fim: tuple[str, str, str] | None,
                 eos: str | None) -> dict[str, str]:
    """{file name: text} of every editor file for this model."""
    files = {"Modelfile": modelfile(gguf_name, fim, eos), "EDITORS.md": instructions(name, gguf_name, fim)}
    if fim:
        p, s, m = fim
        tabby = {"prompt_template": f"{p}{{prefix}}{s}{{suffix}}{m}"}
        files["tabby.json"] = json.dumps(tabby, indent=2) + "\n"
        files["continue-config.yaml"] = (
            "# ~/.continue/config.yaml: add to `models:` (after `ollama create " + name + " -f Modelfile`)\n"
            "models:\n"
            f"  - name: {name}\n    provider: ollama\n    model: {name}\n    roles: [autocomplete]\n"
            f"    promptTemplates:\n      autocomplete: \"{p}{{{{{{prefix}}}}}}{s}{{{{{{suffix}}}}}}{m}\"\n")
        files["llama-vscode-settings.json"] = json.dumps(
            {"llama-vscode.endpoint": f"http://127.0.0.1:{PORT}"}, indent=2) + "\n"
    return files


def instructions(name: str, gguf_name: str, fim: tuple[str, str, str] | None) -> str:
    infill = (f"curl -s http://127.0.0.1:{PORT}/infill "
              "-d '{\"input_prefix\": \"fun add(a: Int, b: Int): Int {\\n"
              "    return \", \"input_suffix\": \"\\n}\", \"n_predict\": 16}'\n") if fim else ""
    return f"""# {name}: use it in your editor

llama.cpp server (llama.vscode and llama.vim talk to its `/infill`):

    llama-server -m {gguf_name} --port {PORT} -c 2048
    {infill or "(no FIM tokens: this model completes left to right only)"}
Ollama (the Modelfile's TEMPLATE has the `{{{{ if .Suffix }}}}` branch Ollama needs for FIM):

    ollama create {name} -f Modelfile
    ollama run {name} 'fun main() {{'

Continue: continue-config.yaml; Tabby: put {gguf_name} and tabby.json in one model folder;
llama.vscode: llama-vscode-settings.json (the server above on port {PORT}).

Without a server, codelora's own llama.cpp (`make llama`) runs the file, from the codelora checkout:

    python -c "from codelora.llamacpp import LlamaCpp; llm = LlamaCpp('{gguf_name}').__enter__(); \\
    print(llm.infill('fun add(a: Int, b: Int): Int {{\\n    return ', '\\n}}', 16)); llm.__exit__()"
"""


def write_editor_files(folder: Path, name: str, gguf_name: str, tokenizer) -> list[str]:
    from codelora.fim import detect_fim_tokens

    found = detect_fim_tokens(tokenizer)
    files = editor_files(name, gguf_name, found.strings if found else None, tokenizer.eos_token)
    for file, text in files.items():
        with atomic_file(folder / file) as handle:
            handle.write(text)
    return sorted(files)
