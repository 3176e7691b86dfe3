using System.Reflection;
using ILGPU.Backends;
using ILGPU.Backends.IL;
using ILGPU.Backends.OpenCL;
using ILGPU.Backends.PTX;
using ILGPU.IR;
using ILGPU.IR.Intrinsics;
using ILGPU.IR.Values;

namespace GpuTransformer.Kernels.Backends;

/// <summary>
/// a·b + c as one fused multiply-add. ILGPU 1.5.3 has no FMA intrinsic (IntrinsicMath.CPUOnly.FMA
/// came later) and writes a·b + c as two OpenCL C statements, which PoCL's compiler does not
/// contract (not even with -cl-mad-enable): the matmul's inner loop ran as separate vmulps and
/// vaddps. <see cref="MultiplyAdd"/> is an ILGPU intrinsic with a code generator per backend
/// (<see cref="EnableFusedMultiplyAdd"/>): OpenCL C's <c>fma(a, b, c)</c> (one vfmadd on a CPU with
/// FMA, a native instruction on OpenCL GPUs), PTX's <c>fma.rn.f32</c> (what ptxas makes of a
/// mul/add pair anyway); the CPU simulator runs the C# body, unfused.
/// </summary>
internal static class FusedMath
{
    /// <summary>a·b + c, rounded once on OpenCL and CUDA, twice on the CPU simulator.</summary>
    [IntrinsicImplementation]
    public static float MultiplyAdd(float a, float b, float c) => a * b + c;

    /// <summary>What the simulator's IL backend compiles in place of <see cref="MultiplyAdd"/>.</summary>
    public static float UnfusedMultiplyAdd(float a, float b, float c) => a * b + c;

    /// <summary>Registers <see cref="MultiplyAdd"/>'s code generators with contexts built by <paramref name="builder"/>.</summary>
    public static ILGPU.Context.Builder EnableFusedMultiplyAdd(this ILGPU.Context.Builder builder)
    {
        var method = typeof(FusedMath).GetMethod(nameof(MultiplyAdd), BindingFlags.Public | BindingFlags.Static)!;
        var manager = builder.GetIntrinsicManager();
        manager.RegisterMethod(method, new CLIntrinsic(typeof(FusedMath), nameof(GenerateOpenCL), IntrinsicImplementationMode.GenerateCode));
        manager.RegisterMethod(method, new PTXIntrinsic(typeof(FusedMath), nameof(GeneratePtx), IntrinsicImplementationMode.GenerateCode));
        manager.RegisterMethod(method, new SimulatorIntrinsic(typeof(FusedMath), nameof(UnfusedMultiplyAdd)));
        return builder;
    }

    /// <summary>Emits <c>target = fma(a, b, c);</c>.</summary>
    private static void GenerateOpenCL(CLBackend backend, CLCodeGenerator codeGenerator, Value value)
    {
        var call = (MethodCall)value;
        var target = codeGenerator.Allocate(call);
        var statement = codeGenerator.BeginStatement(target);
        statement.AppendCommand("fma");
        statement.BeginArguments();
        foreach (var argument in call)
            statement.AppendArgument(codeGenerator.Load(argument));
        statement.EndArguments();
        statement.Finish();
    }

    /// <summary>Emits <c>fma.rn.f32 target, a, b, c;</c>.</summary>
    private static void GeneratePtx(PTXBackend backend, PTXCodeGenerator codeGenerator, Value value)
    {
        var call = (MethodCall)value;
        var a = codeGenerator.LoadPrimitive(call[0]);
        var b = codeGenerator.LoadPrimitive(call[1]);
        var c = codeGenerator.LoadPrimitive(call[2]);
        var target = codeGenerator.AllocateHardware(call);
        using var command = codeGenerator.BeginCommand("fma.rn.f32");
        command.AppendArgument(target);
        command.AppendArgument(a);
        command.AppendArgument(b);
        command.AppendArgument(c);
    }

    /// <summary>A redirect for ILGPU's IL backend (the CPU simulator).</summary>
    private sealed class SimulatorIntrinsic(System.Type handlerType, string methodName)
        : IntrinsicImplementation(BackendType.IL, handlerType, methodName, IntrinsicImplementationMode.Redirect)
    {
        protected override bool CanHandleBackend(ILGPU.Backends.Backend backend) => backend is ILBackend;
    }
}
