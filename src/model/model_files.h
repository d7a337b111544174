// The safetensors files of a Hugging Face model folder, opened (memory-mapped, validated) and
// indexed by tensor name: what decoder_model_load copies from and what `lisa export-gguf`
// streams from, one tensor at a time, without building a model.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "model/config.h"
#include "model/decoder.h"
#include "model/gguf_model.h"

namespace lisa {

struct model_files {
    std::string                                                dir;
    model_config                                               cfg;         // its config.json
    std::vector<std::string>                                   file_names;  // weight files, in index order
    std::vector<std::unique_ptr<st_file>>                      files;
    std::map<std::string, std::pair<const st_file*, const st_tensor*>> where;  // tensor name -> file, tensor
    std::map<std::string, std::string>                         weight_map;  // from the index ("" if unsharded)
    std::string                                                index_path;  // "" if unsharded
    std::unique_ptr<gguf_model>                                gguf;        // set when dir is a GGUF file (then no safetensors)
};

// Opens config.json and the weight files, or a GGUF file (mf->gguf); (single or sharded with an index); refuses .bin-only
// folders, hub ids and duplicate tensors, naming the file.
std::unique_ptr<model_files> model_files_open(const std::string& dir);
// The stored tensor for an entry of the size table, its dtype (F32/BF16/F16) and shape checked.
const st_tensor& model_files_tensor(const model_files& mf, const decoder_tensor_info& info);
// Refuses a tensor the size table does not expect (a wrong config, or an unsupported variant).
void model_files_check_unexpected(const model_files& mf, const std::vector<decoder_tensor_info>& table);

}  // namespace lisa
