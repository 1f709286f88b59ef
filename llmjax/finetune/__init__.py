"""Fine-tuning tasks (`finetune.task`): next-token lm, supervised fine-tuning with a
completion-only loss (sft), and classification by a head on pooled hidden states
(classify). `task.make` is the one place the choice is read; both fine-tune tasks are data
transforms into the pipeline's rows plus, for classify, an output head for the step."""
