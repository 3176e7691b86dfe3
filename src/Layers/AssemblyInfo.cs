namespace GpuTransformer.Layers;
