// scripts/oracle/logits.cpp: llama.cpp oracle for cocoon's fixtures (built by scripts/build-llama-oracle).
// Loads a GGUF, decodes the prompt (token ids, or text tokenized with add_special + parse_special),
// greedy-generates N tokens, and prints one JSON object on stdout:
//   {"model", "n_vocab", "prompt_ids", "ids" (generated), "margins" (top1 - top2 logit at each step,
//    step 0 = the logits after the last prompt token), "first_top10": [[id, logit]...],
//    "first_logits": [... whole vocab ...] (only with --full-logits)}
// The KV cache is F32 and flash attention is off, so llama.cpp rounds no activations to F16.
// Usage: llama-oracle-logits MODEL (--ids 2,651,... | --prompt TEXT) [-n 16] [--full-logits] [-t THREADS]
#include "llama.h"
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>
#include <algorithm>

static void quiet_log(enum ggml_log_level level, const char * text, void *) {
    if (level >= GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

// JSON string; bytes that are not valid UTF-8 (a token can end inside a character) become U+FFFD
static void json_str(const std::string & s) {
    putchar('"');
    for (size_t i = 0; i < s.size();) {
        unsigned char c = s[i];
        if (c < 0x80) {
            if (c == '"' || c == '\\') { putchar('\\'); putchar(c); }
            else if (c < 0x20) printf("\\u%04x", c);
            else putchar(c);
            i++;
            continue;
        }
        size_t n = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
        bool ok = n > 0 && i + n <= s.size();
        for (size_t k = 1; ok && k < n; k++) ok = ((unsigned char) s[i + k] & 0xC0) == 0x80;
        if (ok) { fwrite(s.data() + i, 1, n, stdout); i += n; }
        else { fputs("\\ufffd", stdout); i++; }
    }
    putchar('"');
}

int main(int argc, char ** argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL (--ids a,b,c | --prompt TEXT) [-n N] [--full-logits] [-t THREADS]\n", argv[0]);
        return 2;
    }
    std::string model_path = argv[1];
    std::string ids_arg, prompt;
    bool have_prompt = false, full = false;
    int n_predict = 16, threads = 2;
    for (int i = 2; i < argc; i++) {
        std::string a = argv[i];
        if (a == "--ids" && i + 1 < argc) ids_arg = argv[++i];
        else if (a == "--prompt" && i + 1 < argc) { prompt = argv[++i]; have_prompt = true; }
        else if (a == "-n" && i + 1 < argc) n_predict = atoi(argv[++i]);
        else if (a == "-t" && i + 1 < argc) threads = atoi(argv[++i]);
        else if (a == "--full-logits") full = true;
        else { fprintf(stderr, "unknown argument %s\n", a.c_str()); return 2; }
    }
    llama_log_set(quiet_log, nullptr);
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    llama_model * model = llama_model_load_from_file(model_path.c_str(), mp);
    if (!model) { fprintf(stderr, "failed to load %s\n", model_path.c_str()); return 1; }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);

    std::vector<llama_token> ids;
    if (have_prompt) {
        int n = -llama_tokenize(vocab, prompt.c_str(), (int) prompt.size(), nullptr, 0, true, true);
        ids.resize(n);
        if (llama_tokenize(vocab, prompt.c_str(), (int) prompt.size(), ids.data(), n, true, true) != n) {
            fprintf(stderr, "tokenize failed\n"); return 1;
        }
    } else {
        const char * p = ids_arg.c_str();
        while (*p) {
            char * end;
            long v = strtol(p, &end, 10);
            if (end == p) { fprintf(stderr, "bad --ids\n"); return 2; }
            ids.push_back((llama_token) v);
            p = end;
            while (*p == ',' || *p == ' ') p++;
        }
    }
    if (ids.empty()) { fprintf(stderr, "empty prompt\n"); return 2; }

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t) (ids.size() + n_predict + 16);
    cp.n_batch = cp.n_ctx;
    cp.n_ubatch = cp.n_ctx;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    cp.type_k = GGML_TYPE_F32;
    cp.type_v = GGML_TYPE_F32;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.swa_full = true;
    cp.no_perf = true;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "failed to create context\n"); return 1; }

    std::vector<llama_token> prompt_ids = ids, gen;
    std::vector<float> margins, first;
    std::vector<std::pair<int, float>> top10;
    llama_batch batch = llama_batch_get_one(ids.data(), (int32_t) ids.size());
    for (int step = 0; step < n_predict; step++) {
        if (llama_decode(ctx, batch) != 0) { fprintf(stderr, "decode failed at step %d\n", step); return 1; }
        const float * logits = llama_get_logits_ith(ctx, -1);
        int best = 0, second = -1;
        for (int t = 1; t < n_vocab; t++) {
            if (logits[t] > logits[best]) { second = best; best = t; }
            else if (second < 0 || logits[t] > logits[second]) second = t;
        }
        if (step == 0) {
            first.assign(logits, logits + n_vocab);
            std::vector<int> order(n_vocab);
            for (int t = 0; t < n_vocab; t++) order[t] = t;
            std::partial_sort(order.begin(), order.begin() + std::min(10, n_vocab), order.end(),
                              [&](int a, int b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
            for (int k = 0; k < std::min(10, n_vocab); k++) top10.push_back({order[k], logits[order[k]]});
        }
        margins.push_back(logits[best] - logits[second]);
        gen.push_back(best);
        ids.assign(1, best);
        batch = llama_batch_get_one(ids.data(), 1);
    }

    printf("{\"model\": ");
    std::string base = model_path.substr(model_path.find_last_of('/') == std::string::npos ? 0 : model_path.find_last_of('/') + 1);
    json_str(base);
    printf(", \"n_vocab\": %d, \"prompt_ids\": [", n_vocab);
    for (size_t i = 0; i < prompt_ids.size(); i++) printf("%s%d", i ? ", " : "", prompt_ids[i]);
    printf("], \"ids\": [");
    for (size_t i = 0; i < gen.size(); i++) printf("%s%d", i ? ", " : "", gen[i]);
    printf("], \"text\": ");
    std::string text;
    for (llama_token t : gen) {
        char buf[256];
        int n = llama_token_to_piece(vocab, t, buf, sizeof buf, 0, true);
        if (n > 0) text.append(buf, n);
    }
    json_str(text);
    printf(", \"margins\": [");
    for (size_t i = 0; i < margins.size(); i++) printf("%s%.9g", i ? ", " : "", margins[i]);
    printf("], \"first_top10\": [");
    for (size_t i = 0; i < top10.size(); i++) printf("%s[%d, %.9g]", i ? ", " : "", top10[i].first, top10[i].second);
    printf("]");
    if (full) {
        printf(", \"first_logits\": [");
        for (int t = 0; t < n_vocab; t++) printf("%s%.9g", t ? ", " : "", first[t]);
        printf("]");
    }
    printf("}\n");
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
