namespace GpuTransformer.Training;
