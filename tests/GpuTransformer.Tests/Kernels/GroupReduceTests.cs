namespace GpuTransformer.Tests.Kernels;

[Collection(DeviceCollection.Name)]
public sealed class GroupReduceTests(Devices devices)
{
    // One group per row; each thread strides over the row, then the group reduces.
    private static void RowSumMaxKernel(ArrayView<float> sums, ArrayView<float> maxes, ArrayView<float> input, int columns)
    {
        var scratch = SharedMemory.Allocate<float>(GroupReduce.MaxGroupSize);
        var row = Grid.IdxX;
        var sum = 0f;
        var max = float.NegativeInfinity;
        for (var c = Group.IdxX; c < columns; c += Group.DimX)
        {
            var v = input[row * columns + c];
            sum += v;
            max = MathF.Max(max, v);
        }
        sum = GroupReduce.Sum(sum, scratch);
        max = GroupReduce.Max(max, scratch);
        if (Group.IdxX == 0)
        {
            sums[row] = sum;
            maxes[row] = max;
        }
    }

    [Theory]
    [MemberData(nameof(Devices.Backends), MemberType = typeof(Devices))]
    public void Group_sum_and_max_match_reference(string backend)
    {
        var device = devices.Get(backend);
        var kernel = device.Accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int>(RowSumMaxKernel);
        foreach (var (rows, columns, group) in new[] { (3, 1, 1), (5, 7, 4), (4, 63, 16), (2, 100, device.Tuning.RowGroupSize) })
        {
            var input = TestTensors.Random(rows + columns, rows * columns);
            using var dInput = device.Upload(input);
            using var sums = device.Zeros<float>(rows);
            using var maxes = device.Zeros<float>(rows);
            kernel(device.Stream, new KernelConfig(rows, group), sums.View, maxes.View, dInput.View, columns);
            var expectedSums = new float[rows];
            var expectedMaxes = new float[rows];
            for (var r = 0; r < rows; r++)
            {
                var row = input.AsSpan(r * columns, columns).ToArray();
                expectedSums[r] = (float)row.Sum(v => (double)v);
                expectedMaxes[r] = row.Max();
            }
            TestTensors.AssertClose(expectedSums, device.Download(sums), 1e-5, 1e-5, $"sum {rows}x{columns}/{group}");
            TestTensors.AssertClose(expectedMaxes, device.Download(maxes), 0, 0, $"max {rows}x{columns}/{group}");
        }
    }
}
