using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using GpuTransformer.Kernels.Backends;
using GpuTransformer.Layers.IO;
using GpuTransformer.Layers;
using GpuTransformer.Training.Parity;
using Spectre.Console;

namespace GpuTransformer.Cli.Commands;

/// <summary>
/// <c>parity</c>: one forward, loss and backward of a checkpoint on a batch, written as
/// <c>logits</c>, <c>loss</c> and <c>grad.&lt;name&gt;</c> (the names of the parity golden files);
/// with <c>--compare</c>, every tensor against a reference, exit code 3 when one is outside
/// tolerance (<see cref="ParityTolerance"/>). docs/pytorch-interop.md shows the round trip.
/// </summary>
public static class ParityCommand
{
    /// <summary>Exit code when a tensor is outside tolerance.</summary>
    public const int OutsideTolerance = 3;

    public static Command Create(CliContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var checkpoint = new Argument<string>("checkpoint")
        {
            Description = "Model checkpoint: safetensors with state_dict names and 'model'/'config' metadata (StateDict.Save, " +
                "scripts/parity/export_pytorch.py and the golden files tests/golden/parity/*.safetensors write it)",
        };
        var batch = new Option<string?>("--batch", "-i")
        {
            Description = "Token ids: safetensors with I64/I32 [B, T] tensors ids, targets (language_model) or src, tgt_in, tgt_out (transformer); " +
                "or a .json file such as {\"ids\": [[5, 3, 9]], \"targets\": [[3, 9, 1]]} (one flat list is one sequence). Default: the checkpoint itself (golden files hold their batch)",
            HelpName = "file",
        };
        var prefix = new Option<string>("--prefix")
        {
            Description = "Name prefix of the checkpoint's tensors, for a model wrapped in PyTorch (e.g. 'model' reads model.encoder.norm.weight as encoder.norm.weight)",
            DefaultValueFactory = _ => "",
        };
        var output = new Option<string?>("--out", "-o")
        {
            Description = "Where to write logits, loss and grad.<name> (safetensors, F32). Default: <checkpoint name>.parity.safetensors in the current folder",
            HelpName = "file",
        };
        var compare = new Option<string?>("--compare")
        {
            Description = "Reference to compare with: a golden file, or PyTorch's output from scripts/parity/import_to_pytorch.py. Prints max |Δ| per tensor; exit code 3 when one is outside tolerance",
            HelpName = "file",
        };
        var relative = new Option<double>("--rtol")
        {
            Description = "Logits and gradients pass when max|a − b| ≤ rtol · max|b| + atol over each tensor (b the reference)",
            DefaultValueFactory = _ => ParityTolerance.Default.Relative,
        };
        var lossRelative = new Option<double>("--loss-rtol")
        {
            Description = "The loss passes when |a − b| ≤ loss-rtol · |b|",
            DefaultValueFactory = _ => ParityTolerance.Default.LossRelative,
        };
        var floor = new Option<double>("--atol")
        {
            Description = "Absolute floor added to every tensor's allowance (matters only for a reference that is exactly 0)",
            DefaultValueFactory = _ => ParityTolerance.Default.AbsoluteFloor,
        };
        foreach (var option in new[] { relative, lossRelative, floor })
        {
            option.Validators.Add(result =>
            {
                if (!(result.GetValueOrDefault<double>() >= 0))
                    result.AddError($"{option.Name} must be ≥ 0.");
            });
        }

        var command = new Command("parity",
            "Run one forward, loss and backward of a checkpoint on a batch (dropout off) and write logits, loss and the gradient of every parameter " +
            "(grad.<state_dict name>) to a safetensors file; with --compare, check each against a reference (a parity golden file or PyTorch's output). " +
            $"Exit codes: 0 done (and within tolerance), 1 bad input, {OutsideTolerance} outside tolerance. See docs/pytorch-interop.md.");
        command.Arguments.Add(checkpoint);
        foreach (var option in new Option[] { batch, prefix, output, compare, relative, lossRelative, floor })
            command.Options.Add(option);
        context.SetAction(command, parse => Run(context, parse, new Request(
            parse.GetValue(checkpoint)!, parse.GetValue(batch), parse.GetValue(prefix) ?? "", parse.GetValue(output), parse.GetValue(compare),
            new ParityTolerance(parse.GetValue(relative), parse.GetValue(lossRelative), parse.GetValue(floor)))));
        return command;
    }

    private sealed record Request(string Checkpoint, string? Batch, string Prefix, string? Output, string? Compare, ParityTolerance Tolerance);

    private static int Run(CliContext context, ParseResult parse, Request request)
    {
        var c = CultureInfo.InvariantCulture;
        var clock = Stopwatch.StartNew();
        // Every file is read and checked before a device is created, so bad input fails fast.
        var checkpoint = SafeTensors.Read(request.Checkpoint);
        var kind = StateDict.ModelKind(checkpoint);
        var batch = request.Batch is null ? ParityBatch.From(checkpoint, kind) : ParityBatch.Read(request.Batch, kind);
        var reference = request.Compare is null ? null : SafeTensors.Read(request.Compare);
        var outputPath = request.Output ?? Path.GetFileNameWithoutExtension(request.Checkpoint) + ".parity.safetensors";

        using var device = ComputeDevice.Create(context.Backend(parse), context.DeviceOptions(parse));
        using var model = ModelParity.Load(device, checkpoint, request.Prefix);
        if (reference is not null)
            RequireSameConfig(model, reference);
        var result = ModelParity.Run(model, batch);
        var seconds = clock.Elapsed.TotalSeconds;
        result.Save(outputPath, new Dictionary<string, string>
        {
            [StateDict.ModelKey] = model.Config.Kind,
            [StateDict.ConfigKey] = model.Config.ToJson(),
            ["checkpoint"] = Path.GetFullPath(request.Checkpoint),
            ["batch"] = Path.GetFullPath(request.Batch ?? request.Checkpoint),
            ["device"] = device.ToString(),
            ["generator"] = "gpu-transformer parity",
        });

        var console = context.Out;
        var parameters = model.Parameters().ToList();
        var padId = model.Config.PadId;
        var ignored = ModelParity.IgnoredTensors(model, checkpoint, request.Prefix);
        var targets = batch.Tensors.Last().Ids;
        var counted = targets.Count - (padId >= 0 ? targets.Span.Count(padId) : 0);
        console.MarkupLine(Markup.Escape($"Model: {model.Config.Kind}, {parameters.Sum(p => (long)p.Value.Length).ToString("N0", c)} parameters in {parameters.Count} tensors"));
        console.MarkupLine(Markup.Escape($"Config: {model.Config.ToJson()}"));
        console.MarkupLine(Markup.Escape($"Checkpoint: {request.Checkpoint}" + (request.Prefix.Length > 0 ? $" (prefix '{request.Prefix}')" : "") +
            (ignored > 0 ? $"; {ignored} tensors that are not parameters ignored" : "")));
        console.MarkupLine(Markup.Escape($"Device: {device}"));
        console.MarkupLine(Markup.Escape($"Batch: {batch} from {batch.Source}; {counted} of {targets.Count} targets counted (pad_id {padId} ignored)"));
        console.MarkupLine(Markup.Escape(string.Create(c, $"Loss: {result.Loss:G9}; logits {Tensor<float>.Describe(result.LogitsShape)}; gradient norm {result.GradientNorm():G6} over {result.Gradients.Count} tensors")));
        console.MarkupLine(Markup.Escape(string.Create(c, $"Wrote {outputPath} ({seconds:F1} s)")));
        return reference is null ? 0 : Report(context, ParityComparison.Compare(result, reference, request.Tolerance), reference, request.Tolerance);
    }

    private static int Report(CliContext context, IReadOnlyList<TensorComparison> comparisons, SafeTensorFile reference, ParityTolerance tolerance)
    {
        var c = CultureInfo.InvariantCulture;
        var table = new Table().Border(TableBorder.Rounded).Title(Markup.Escape($"Against {reference.Source}"))
            .AddColumns("tensor", "shape", "max |Δ|", "max |ref|", "max |Δ| / max |ref|", "allowed |Δ|", "");
        foreach (var row in comparisons)
        {
            table.AddRow(Markup.Escape(row.Name), Markup.Escape(Tensor<float>.Describe(row.Shape)), row.MaxAbsDifference.ToString("0.00e+0", c),
                row.MaxAbsReference.ToString("0.00e+0", c), row.RelativeDifference.ToString("0.00e+0", c), row.Allowed.ToString("0.00e+0", c),
                row.Within ? "ok" : "[red]OUTSIDE[/]");
        }
        context.Out.Write(table);
        var outside = comparisons.Where(r => !r.Within).ToList();
        var worst = comparisons.Where(r => r.Name != ParityResult.LossName).MaxBy(r => double.IsNaN(r.MaxAbsDifference) ? double.PositiveInfinity : r.RelativeDifference)!;
        var rule = string.Create(c, $"rtol {tolerance.Relative:G3} of each tensor's max |ref| + atol {tolerance.AbsoluteFloor:G3}, loss rtol {tolerance.LossRelative:G3}");
        if (outside.Count == 0)
        {
            context.Out.MarkupLine(Markup.Escape(string.Create(c,
                $"All {comparisons.Count} tensors within tolerance ({rule}); worst relative difference {worst.RelativeDifference:0.00e+0} ({worst.Name}).")));
            return 0;
        }
        context.Error.WriteLine(string.Create(c,
            $"error: {outside.Count} of {comparisons.Count} tensors outside tolerance ({rule}): {string.Join(", ", outside.Take(5).Select(r => r.Name))}{(outside.Count > 5 ? ", …" : "")}."));
        return OutsideTolerance;
    }

    /// <summary>A reference that names its model (golden files and our outputs do) must name this one.</summary>
    private static void RequireSameConfig(IModel model, SafeTensorFile reference)
    {
        if (!reference.Metadata.ContainsKey(StateDict.ConfigKey))
            return;
        var kind = StateDict.ModelKind(reference);
        if (kind != model.Config.Kind || !Equals(StateDict.ReadConfig(reference), model.Config))
        {
            throw new InvalidDataException(
                $"'{reference.Source}' is for another model: {kind} {reference.Metadata[StateDict.ConfigKey]}, but the checkpoint holds {model.Config.Kind} {model.Config.ToJson()}.");
        }
    }
}
