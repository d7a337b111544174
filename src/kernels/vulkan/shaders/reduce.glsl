// A workgroup's sum or maximum of one value per invocation: each subgroup reduces in hardware,
// then the first subgroup reduces their results the same way (three barriers instead of a
// shared-memory tree's nine). A device's subgroup reduction is one fixed circuit, so a run
// repeats bit for bit on one device; another device may round differently.
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
shared float reduce_part[LOCAL_SIZE];
shared float reduce_total;
float workgroup_reduce(float v, bool is_max) {
    const float s = is_max ? subgroupMax(v) : subgroupAdd(v);
    if (subgroupElect()) reduce_part[gl_SubgroupID] = s;
    barrier();
    if (gl_SubgroupID == 0u) {  // the first subgroup reduces the subgroups' results
        float x = is_max ? -1.0 / 0.0 : 0.0;
        for (uint i = gl_SubgroupInvocationID; i < gl_NumSubgroups; i += gl_SubgroupSize)
            x = is_max ? max(x, reduce_part[i]) : x + reduce_part[i];
        x = is_max ? subgroupMax(x) : subgroupAdd(x);
        if (subgroupElect()) reduce_total = x;
    }
    barrier();
    const float r = reduce_total;
    barrier();  // reduce_part and reduce_total may be written again by the next call
    return r;
}
float workgroup_sum(float v) { return workgroup_reduce(v, false); }
float workgroup_max(float v) { return workgroup_reduce(v, true); }
