// Every option of a training run (train_options), stated once with its default, and the method
// names. Read by the trainer, the policies (policy.h) and the CLI; depends on nothing above it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "train/optim.h"
#include "train/preference.h"

namespace lisa {

enum class train_method { lisa, full, lora };
bool        train_method_parse(const std::string& s, train_method* out);  // "lisa" | "full" | "lora"
const char* train_method_name(train_method m);

// Every option of a run, with its default stated here and nowhere else (the CLI's help shows
// these values; training_args.json records what the user set, and under "resolved" what the
// run derived).
struct train_options {
    // what to train
    train_method method = train_method::lisa;
    int64_t     lisa_activated_layers = 2;  // γ
    int64_t     lisa_interval_steps = 20;   // K
    bool        lisa_train_embeddings = true;
    bool        lisa_train_head = true;
    std::string lisa_layer_sampling = "uniform";  // uniform | owlore (see train/layer_sampling.h)
    double      lisa_outlier_threshold = 7.0;     // owlore: outlier when |W|·‖X‖ > this × the matrix mean
    int64_t     lora_r = 8;
    double      lora_alpha = 32;
    double      lora_dropout = 0.1;
    std::vector<std::string> lora_target_modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                    "down_proj"};
    bool        save_aggregated_lora = false;
    // data
    std::string model_name_or_path, dataset_path, eval_dataset_path, output_model_path;
    int64_t     block_size = 0;  // 0: min(1024, model context)
    std::string conversation_template;
    bool        train_on_prompt = false, group_texts = false;
    bool        packing = false;          // rows of up to block_size filled with whole samples, each
                                          // attending only to itself (axolotl/TRL --packing)
    bool        padding_free = true;      // a micro-batch's samples end to end in one row, attention
                                          // kept inside each: no pad token computed (false: padded)
    bool        group_by_length = false;  // batches of samples of similar length (HF --group_by_length)
    bool        gradient_checkpointing = false;  // keep layer inputs only; recompute in the backward
    // optimisation (Hugging Face TrainingArguments defaults)
    adamw_hparams adam;                    // lr 5e-5, betas (0.9, 0.999), eps 1e-8, wd 0
    double      max_grad_norm = 1.0;
    lr_schedule lr_scheduler_type = lr_schedule::linear;
    int64_t     warmup_steps = 0;
    double      warmup_ratio = 0.0;
    double      num_train_epochs = 3.0;
    int64_t     max_steps = -1;
    int64_t     per_device_train_batch_size = 8;
    int64_t     per_device_eval_batch_size = 8;
    int64_t     gradient_accumulation_steps = 1;
    uint64_t    seed = 42;
    // outputs
    int64_t     logging_steps = 500;
    int64_t     save_steps = 0;  // 0 = no checkpoints; else every N steps and at the last step (as HF)
    int64_t     save_total_limit = 0;  // keep the newest N checkpoints (0 = all), older ones deleted
    std::string save_strategy = "steps";  // steps (every save_steps) | epoch | no
    std::string eval_strategy = "";       // "" (every eval_steps if set, and at the end) | steps | epoch | no
    bool        load_best_model_at_end = false;  // the saved model is the checkpoint with the best eval_loss
    std::string metric_for_best_model = "eval_loss";
    int         zero_stage = 0;        // 1: AdamW moments sharded across MPI ranks, parameters gathered
    double      validation_split_percentage = 0;  // > 0 (and no eval dataset): hold out this share of the
                                                  // training samples for eval_loss (LMFlow's flag)
                                       // only once a newer one is complete
    int64_t     eval_steps = 0;  // 0 = no evaluation during training
    // --eval_steps / --save_steps / --logging_steps below 1: that fraction of all steps (Hugging
    // Face's reading), resolved to a step count once the run's length is known; 0 = not used
    double      eval_steps_fraction = 0, save_steps_fraction = 0, logging_steps_fraction = 0;
    std::string resume_from_checkpoint;  // folder or "latest"
    bool        overwrite_output_dir = false;  // replace what an earlier run left in the output folder
    std::string torch_dtype;             // output dtype; "" = the input's
    std::string base_quant;              // "" or q8_0 | q4_0 | q4_K: frozen layer matrices held in those blocks (CPU)
    pref_options pref;                   // --objective dpo|orpo and its hyperparameters (preference data)
    std::string max_shard_size = "5GB";
    std::string run_name;                // recorded in training_args.json
    int         threads = 0;             // compute threads; 0 = the process default
    const backend* device = nullptr;     // where the model, activations and optimizer state live (null: CPU)
    // library use (benchmarks): train on these samples instead of reading dataset_path (no
    // tokenizer needed), keep file order, and skip writing the final model
    const struct dataset* train_data = nullptr;
    bool                  shuffle = true;
    bool                  save_model = true;
};

}  // namespace lisa
