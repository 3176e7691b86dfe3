using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using GpuTransformer.Cli.Profiling;
using GpuTransformer.Kernels.Backends;
using GpuTransformer.Kernels.Profiling;
using GpuTransformer.Training.Generation;

namespace GpuTransformer.Cli.Commands;

/// <summary>
/// <c>generate</c>: loads a language-model checkpoint (weights, config and tokenizer from its
/// metadata, or <c>--tokenizer</c>) and prints the prompt's continuation to stdout; a summary
/// (tokens, why it stopped, speed) goes to stderr so the text can be piped.
/// </summary>
public static class GenerateCommand
{
    public static Command Create(CliContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var checkpoint = new Option<string>("--checkpoint")
        {
            Description = "Language-model checkpoint (safetensors with config and tokenizer in its metadata)",
            Required = true,
            HelpName = "path",
        };
        var tokenizer = new Option<string?>("--tokenizer")
        {
            Description = "Tokenizer JSON file, for a checkpoint that does not store its tokenizer",
            HelpName = "path",
        };
        var prompt = new Option<string>("--prompt", "-p") { Description = "Text to continue (default: empty, a new document)", DefaultValueFactory = _ => "" };
        var promptIds = new Option<int[]>("--prompt-ids")
        {
            Description = "Token ids to continue instead of --prompt (e.g. --prompt-ids 72 101 108)",
            AllowMultipleArgumentsPerToken = true,
        };
        var maxTokens = new Option<int>("--max-tokens", "-n") { Description = "Most new tokens", DefaultValueFactory = _ => 200 }.InRange(1, 1_000_000);
        var temperature = new Option<double>("--temperature") { Description = "Sampling temperature (0: greedy)", DefaultValueFactory = _ => 1.0 }.InRange(0, 100);
        var topK = new Option<int>("--top-k") { Description = "Sample among the k most likely tokens (0: all)", DefaultValueFactory = _ => 0 }.InRange(0, int.MaxValue);
        var topP = new Option<double>("--top-p") { Description = "Sample from the smallest set of tokens with this much probability (1: all)", DefaultValueFactory = _ => 1.0 }.AboveUpTo(0, 1);
        var seed = new Option<ulong>("--seed") { Description = "Seed of the sampling stream", DefaultValueFactory = _ => 0 };
        var greedy = new Option<bool>("--greedy") { Description = "Always take the most likely token" };
        var strict = new Option<bool>("--no-sliding-window") { Description = "Refuse prompts + max tokens longer than max_seq_len instead of sliding the context window" };
        var noCache = new Option<bool>("--no-cache") { Description = "Run the whole window for every token instead of using the key/value cache (the cached path's reference; for benchmarks)" };
        var warmup = new Option<bool>("--warmup") { Description = "Generate once untimed first (kernel compilation stays out of the tokens/s)" };
        var profile = new Option<string?>("--profile")
        {
            Description = "Time every kernel family, layer and host copy per generated token (slower: each launch waits for the device); writes profile.md/.json/.png into this folder",
            HelpName = "folder",
        };
        var command = new Command("generate", "Sample text from a trained language model (KV-cached; greedy, temperature, top-k, top-p)");
        foreach (var option in new Option[] { checkpoint, tokenizer, prompt, promptIds, maxTokens, temperature, topK, topP, seed, greedy, strict, noCache, warmup, profile })
            command.Options.Add(option);
        context.SetAction(command, parse =>
        {
            var options = new GenerationOptions
            {
                MaxTokens = parse.GetValue(maxTokens),
                UseCache = !parse.GetValue(noCache),
                Overflow = parse.GetValue(strict) ? ContextOverflow.Refuse : ContextOverflow.SlidingWindow,
                Sampling = new SamplingOptions
                {
                    Greedy = parse.GetValue(greedy),
                    Temperature = parse.GetValue(temperature),
                    TopK = parse.GetValue(topK),
                    TopP = parse.GetValue(topP),
                    Seed = parse.GetValue(seed),
                },
            }.Validate();
            return Run(context, parse, parse.GetValue(checkpoint)!, parse.GetValue(tokenizer), parse.GetValue(prompt) ?? "", parse.GetValue(promptIds), options, parse.GetValue(profile), parse.GetValue(warmup));
        });
        return command;
    }

    private static int Run(
        CliContext context, ParseResult parse, string checkpoint, string? tokenizerPath, string prompt, int[]? promptIds, GenerationOptions options, string? profileFolder, bool warmup)
    {
        using var device = ComputeDevice.Create(context.Backend(parse), context.DeviceOptions(parse));
        var (model, tokenizer) = ModelCheckpoint.LoadLanguageModel(device, checkpoint, tokenizerPath);
        using (model)
        {
            // Profiled: one window over the whole generation (prefill included), its kernels compiled by a first run outside it.
            if (warmup || profileFolder is not null)
                LanguageModelGenerator.GenerateIds(model, [tokenizer.Specials.Eos], options with { MaxTokens = warmup ? options.MaxTokens : 2 }, tokenizer.Specials.Eos, []);
            var profiler = profileFolder is null ? null : KernelProfiler.Attach(device);
            profiler?.Start();
            using var decode = device.InPhase(ProfilePhase.Decode);
            var clock = Stopwatch.StartNew();
            string text;
            int generated, contextLength;
            StopReason stop;
            if (promptIds is { Length: > 0 })
            {
                for (var i = 0; i < promptIds.Length; i++)
                {
                    if ((uint)promptIds[i] >= (uint)tokenizer.VocabularySize)
                        throw new ArgumentException($"Prompt id {promptIds[i]} at position {i} is outside the tokenizer's vocabulary of {tokenizer.VocabularySize} ids.");
                }
                var context0 = options.StartWithSeparator ? [tokenizer.Specials.Eos, .. promptIds] : promptIds;
                var (ids, reason, _, _) = LanguageModelGenerator.GenerateIds(model, context0, options, tokenizer.Specials.Eos, [tokenizer.Specials.Pad, tokenizer.Specials.Bos]);
                var kept = reason == StopReason.EndOfSequence ? ids[..^1] : ids;
                text = tokenizer.Decode(promptIds) + tokenizer.Decode(kept);
                (generated, stop, contextLength) = (ids.Length, reason, context0.Length);
            }
            else
            {
                var result = LanguageModelGenerator.Generate(model, tokenizer, prompt, options);
                text = prompt + result.Text;
                (generated, stop, contextLength) = (result.GeneratedIds.Length, result.StopReason, result.ContextIds.Length);
            }
            var seconds = clock.Elapsed.TotalSeconds;
            profiler?.Stop(generated);
            var maxLength = model.Config.MaxSequenceLength;
            if (LanguageModelGenerator.DroppedContextTokens(contextLength, maxLength) is > 0 and var dropped)
            {
                context.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"warning: the prompt is {contextLength} tokens, more than max_seq_len {maxLength}: its first {dropped} were dropped and the model continued its last {contextLength - dropped} (--no-sliding-window refuses instead)."));
            }
            context.Output.WriteLine(text);
            context.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"[{generated} tokens, {(stop == StopReason.EndOfSequence ? "stopped at <eos>" : "max tokens")}, {options.Sampling}, {(options.UseCache ? "KV cache" : "no cache")}, {generated / Math.Max(seconds, 1e-9):F1} tokens/s on {device.Backend}]"));
            if (profiler is not null)
            {
                var config = model.Config;
                ProfileOutput.Write(context.Error, profiler.Report(string.Create(CultureInfo.InvariantCulture,
                    $"generate: d_model {config.DModel}, {config.NumLayers} layers, vocab {config.VocabularySize}, {generated} tokens, {options.Sampling}"), "token"), profileFolder!, "profile");
            }
        }
        return 0;
    }
}
