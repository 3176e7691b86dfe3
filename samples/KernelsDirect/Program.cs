// Kernels called directly: a matmul and a causal attention on the device asked for, each checked
// against a plain C# loop (in double) and timed, GFLOP/s printed.
//   dotnet run -- [auto|cuda|opencl|cpu]   (default: GPUTRANSFORMER_BACKEND, else auto)
using System.Diagnostics;
using GpuTransformer.Kernels;
using GpuTransformer.Kernels.Backends;
using ILGPU;
using ILGPU.Runtime;

try
{
    var backend = args.Length > 0 ? args[0] : Environment.GetEnvironmentVariable("GPUTRANSFORMER_BACKEND") ?? "auto";
    using var device = ComputeDevice.Create(backend);
    Console.WriteLine($"device: {device}");
    var random = new Random(1);
    float[] Random(int count) => [.. Enumerable.Range(0, count).Select(_ => (float)((random.NextDouble() * 2) - 1))];

    // C[M, N] = A[M, K]·B[K, N], row-major.
    const int M = 96, N = 80, K = 112;
    var a = Random(M * K);
    var b = Random(K * N);
    using var aBuffer = device.Accelerator.Allocate1D(a);
    using var bBuffer = device.Accelerator.Allocate1D(b);
    using var cBuffer = device.Accelerator.Allocate1D<float>(M * N);
    var matmul = device.Kernels<MatmulKernels>();
    var matmulSeconds = Time(device, () => matmul.Multiply(cBuffer.View, aBuffer.View, bBuffer.View, M, N, K));
    var c = cBuffer.GetAsArray1D();
    var matmulError = 0.0;
    for (var i = 0; i < M; i++)
    {
        for (var j = 0; j < N; j++)
        {
            var sum = 0.0;
            for (var p = 0; p < K; p++)
                sum += (double)a[(i * K) + p] * b[(p * N) + j];
            matmulError = Math.Max(matmulError, Math.Abs(sum - c[(i * N) + j]));
        }
    }
    Report("matmul", $"[{M}, {K}]·[{K}, {N}]", matmulError, 1e-4, 2.0 * M * N * K / matmulSeconds);

    // O = softmax(mask(Q·Kᵀ/√d))·V; Q, K, V, O [B, T, H, d], causal.
    const int Batch = 2, T = 40, H = 2, D = 16;
    var q = Random(Batch * T * H * D);
    var k = Random(Batch * T * H * D);
    var v = Random(Batch * T * H * D);
    using var qBuffer = device.Accelerator.Allocate1D(q);
    using var kBuffer = device.Accelerator.Allocate1D(k);
    using var vBuffer = device.Accelerator.Allocate1D(v);
    using var oBuffer = device.Accelerator.Allocate1D<float>(Batch * T * H * D);
    using var logSumExp = device.Accelerator.Allocate1D<float>(Batch * H * T); // [B, H, T]
    var attention = device.Kernels<AttentionKernels>();
    var shape = new AttentionShape(Batch, H, T, T, D);
    var attentionSeconds = Time(device, () => attention.Forward(oBuffer.View, logSumExp.View, qBuffer.View, kBuffer.View, vBuffer.View, shape,
        new AttentionOptions { Causal = true }));
    var o = oBuffer.GetAsArray1D();
    var attentionError = 0.0;
    int At(int bi, int t, int h) => (((bi * T) + t) * H + h) * D;
    for (var bi = 0; bi < Batch; bi++)
    {
        for (var h = 0; h < H; h++)
        {
            for (var i = 0; i < T; i++)
            {
                var scores = new double[i + 1]; // keys 0..i: the causal mask hides the rest
                for (var j = 0; j <= i; j++)
                {
                    for (var e = 0; e < D; e++)
                        scores[j] += (double)q[At(bi, i, h) + e] * k[At(bi, j, h) + e] / Math.Sqrt(D);
                }
                var max = scores.Max();
                var weights = scores.Select(s => Math.Exp(s - max)).ToArray();
                var total = weights.Sum();
                for (var e = 0; e < D; e++)
                {
                    var sum = 0.0;
                    for (var j = 0; j <= i; j++)
                        sum += weights[j] / total * v[At(bi, j, h) + e];
                    attentionError = Math.Max(attentionError, Math.Abs(sum - o[At(bi, i, h) + e]));
                }
            }
        }
    }
    // Causal: about half of the 2·B·H·T²·d multiply-adds of Q·Kᵀ and P·V.
    Report("causal attention", shape.ToString(), attentionError, 1e-4, 2.0 * Batch * H * T * (T + 1) * D / attentionSeconds);
    return 0;
}
catch (Exception e) when (e is ArgumentException or InvalidOperationException)
{
    // An ArgumentException's message ends with " (Parameter 'name')": the line says it without.
    var message = e is ArgumentException { ParamName: { } name } ? e.Message.Replace($" (Parameter '{name}')", "", StringComparison.Ordinal) : e.Message;
    Console.Error.WriteLine($"error: {message}");
    return 1;
}

// Seconds per launch: one warm-up (compiles the kernel), then the mean of 20.
static double Time(ComputeDevice device, Action launch)
{
    launch();
    device.Synchronize();
    const int Repeats = 20;
    var clock = Stopwatch.StartNew();
    for (var i = 0; i < Repeats; i++)
        launch();
    device.Synchronize();
    return clock.Elapsed.TotalSeconds / Repeats;
}

static void Report(string name, string shape, double error, double tolerance, double flopsPerSecond)
{
    if (error > tolerance)
        throw new InvalidOperationException($"{name} {shape} differs from the C# loop by {error:E2} (tolerance {tolerance:E0}).");
    Console.WriteLine($"{name} {shape}: max |error| {error:E2} ≤ {tolerance:E0}, {flopsPerSecond / 1e9:F2} GFLOP/s");
}
