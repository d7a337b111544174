// Shared by every lisa.cpp compute shader: tensors are reached by device address (buffer
// references in the push constants, the pointers of kernels.h), 256 invocations per workgroup,
// loops stride over the whole grid so any element count fits the dispatch limits.
#extension GL_EXT_buffer_reference : require
#extension GL_EXT_shader_explicit_arithmetic_types_int64 : require
#extension GL_EXT_shader_16bit_storage : enable
#ifndef LOCAL_SIZE
#define LOCAL_SIZE 256
#endif
layout(local_size_x = LOCAL_SIZE) in;
layout(buffer_reference, std430, buffer_reference_align = 4) buffer f32_buf { float v[]; };
layout(buffer_reference, std430, buffer_reference_align = 4) buffer i32_buf { int v[]; };
layout(buffer_reference, std430, buffer_reference_align = 2) buffer u16_buf { uint16_t v[]; };
#define GRID_LOOP(i, n) for (uint i = gl_GlobalInvocationID.x; i < (n); i += gl_NumWorkGroups.x * 256u)
