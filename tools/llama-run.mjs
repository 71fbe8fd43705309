// codelora's bridge to llama.cpp: node-llama-cpp (installed by tools/install-llama.sh into
// .tools/llama) loads one GGUF and answers JSON Lines requests on stdin, one JSON line out per
// request, in order. codelora/llamacpp.py writes the requests and reads the answers.
//
//   node tools/llama-run.mjs --runtime .tools/llama --model model.gguf [--threads 1] [--context 1024]
//
// Requests (one JSON object a line):
//   {"tokenize": "text"}                    -> {"tokens": [...]} (special tokens such as
//                                              <fim_prefix> written in the text are parsed as such)
//   {"tokens": [ids], "max_tokens": N, "min_tokens": K, "stop_ids": [ids], "stop_newline_from": I}
//                                           -> {"tokens": [new ids], "text": "...", "seconds": s}
//      Greedy decoding from exactly these prompt ids (no BOS added): at most N new tokens; a token of
//      `stop_ids` ends the completion (it is returned last) but may not come among the first K; with
//      `stop_newline_from` set, decoding also ends once the text holds "\n" at or after that index
//      (the caller cuts the exact prediction with its own stop rule).
//   {"infill": {"prefix": "...", "suffix": "..."}, "max_tokens": N}
//                                           -> {"text": "...", "seconds": s}
//      node-llama-cpp's own infill (the editor's path): it finds the FIM tokens in the GGUF's
//      metadata and builds the prompt itself; greedy; stops at any end-of-generation token.
import path from "node:path";
import readline from "node:readline";
import {pathToFileURL} from "node:url";
import {parseArgs} from "node:util";

const {values: args} = parseArgs({
    options: {
        runtime: {type: "string"},
        model: {type: "string"},
        threads: {type: "string", default: "1"},
        context: {type: "string", default: "1024"},
    },
});
if (!args.runtime || !args.model) {
    console.error("usage: node tools/llama-run.mjs --runtime DIR --model FILE.gguf [--threads N] [--context N]");
    process.exit(2);
}
const entry = path.join(path.resolve(args.runtime), "node_modules", "node-llama-cpp", "dist", "index.js");
const {getLlama, LlamaCompletion, LlamaLogLevel, TokenBias} = await import(pathToFileURL(entry).href);

// build "never": use the prebuilt binary or fail, never compile llama.cpp behind the caller's back.
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
// No mmap: on these machines an mmapped model stalled on its first page faults.
const model = await llama.loadModel({modelPath: args.model, useMmap: false});
const context = await model.createContext({contextSize: Number(args.context), threads: Number(args.threads)});
const sequence = context.getSequence();

function noStopBias(stopIds) {
    // TokenBias.set ignores end-of-generation tokens, so the EOS ban for `min_tokens` goes into its
    // map directly: the same -inf logit transformers' min_new_tokens gives EOS.
    const bias = new TokenBias(model.tokenizer);
    for (const id of stopIds) bias._biases.set(id, -Infinity);
    return bias;
}

async function complete(request) {
    const stopIds = new Set(request.stop_ids ?? []);
    const ban = noStopBias(stopIds), none = new TokenBias(model.tokenizer);
    const minTokens = request.min_tokens ?? 0;
    const newlineFrom = request.stop_newline_from ?? null;
    const out = [];
    await sequence.clearHistory();
    const start = performance.now();
    const steps = sequence.evaluate(request.tokens, {
        temperature: 0, yieldEogToken: true, tokenBias: () => (out.length < minTokens ? ban : none),
    });
    for await (const token of steps) {
        out.push(token);
        if (stopIds.has(token) || out.length >= request.max_tokens) break;
        if (newlineFrom !== null && model.detokenize(out).indexOf("\n", newlineFrom) >= 0) break;
    }
    const seconds = (performance.now() - start) / 1000;
    return {tokens: out, text: model.detokenize(out.filter((t) => !stopIds.has(t))), seconds};
}

async function infill(request) {
    await sequence.clearHistory();
    const completion = new LlamaCompletion({contextSequence: sequence});
    if (!completion.infillSupported) throw new Error("this GGUF has no FIM prefix/suffix tokens: infill is not supported");
    const start = performance.now();
    const text = await completion.generateInfillCompletion(request.infill.prefix, request.infill.suffix, {
        maxTokens: request.max_tokens, temperature: 0,
    });
    completion.dispose({disposeSequence: false});
    return {text, seconds: (performance.now() - start) / 1000};
}

async function answer(request) {
    if (typeof request.tokenize === "string") return {tokens: model.tokenize(request.tokenize, true)};
    if (request.infill) return infill(request);
    return complete(request);
}

const lines = readline.createInterface({input: process.stdin, crlfDelay: Infinity});
for await (const line of lines) {
    if (!line.trim()) continue;
    let reply;
    try {
        reply = await answer(JSON.parse(line));
    } catch (err) {
        reply = {error: String(err?.message ?? err)};
    }
    process.stdout.write(JSON.stringify(reply) + "\n");
}
await context.dispose();
await model.dispose();
await llama.dispose();
