#!/usr/bin/env bash
# Shared by the sun2024_*.sh scripts: the robustness study of Sun et al. 2023 ("Evaluating the
# Zero-shot Robustness of Instruction-tuned Language Models") for one model, in three steps per
# benchmark (mmlu or bigbench_lite), each run on its own since pod and SLURM jobs return at start:
#
#   sun2024_<model>.sh observed BENCHMARK   build the model family's OBSERVED instructions for the
#                                           benchmark (robust-prompt instructions build) into
#                                           OBSERVED_DIR/<family>_<benchmark>.jsonl
#   sun2024_<model>.sh eval BENCHMARK       evaluate under the shipped unobserved set plus that
#                                           observed set, with gin_configs/runs/sun2024.gin's settings
#   sun2024_<model>.sh report BENCHMARK     once the evaluation finished: the study's summary into
#                                           OUT_ROOT/RUN_NAME/sun2024_report/ (robust-prompt report)
#
# Extra arguments go to robust-prompt, e.g. `sun2024_flan_t5_xl.sh eval mmlu --max_examples 20`.
#   OBSERVED_DIR     where the observed sets are built and read (default: observed, relative to the
#                    checkout). On a pod every worker builds its own copy, since every process renders
#                    the instructions: keep it off a shared mount (the build writes the file in place).
#   OBSERVED_SOURCE  `instructions build --source`: FLAN's flan/v2 folder (flan_t5), PromptSource's
#                    templates/ folder (t0), Alpaca's alpaca_data.json (alpaca, required there);
#                    default for flan_t5 and t0: the pinned commit, downloaded once into the cache.
#   RUN_NAME         default sun2024_<model>_<benchmark>; plus common.sh's settings.
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

OBSERVED_DIR="${OBSERVED_DIR:-observed}"

# The study's BIG-bench Lite tasks with its subtask choices (InstructionEval's configs/BBH loaders):
# logical_deduction on five_objects only, strange_stories on its boolean subtask only, the other
# tasks whole (bbq_lite_json and conceptual_combinations with all their subtasks).
SUN2024_BBL_TASKS=(
  bigbench:bbq_lite_json
  bigbench:code_line_description
  bigbench:conceptual_combinations
  bigbench:hindu_knowledge
  bigbench:known_unknowns
  bigbench:language_identification
  bigbench:logic_grid_puzzle
  bigbench:logical_deduction:five_objects
  bigbench:novel_concepts
  bigbench:play_dialog_same_or_different
  bigbench:strange_stories:boolean
  bigbench:strategyqa
  bigbench:vitaminc_fact_verification
  bigbench:winowhy
)

# sun2024_run FAMILY MODEL GIN_FILE NAME STEP BENCHMARK [robust-prompt flags...]
#   FAMILY: the `instructions build --family` whose tuning data makes the observed set;
#   MODEL: --model; GIN_FILE: the model's gin_configs/experiments/sun2024_*.gin; NAME: in RUN_NAME.
sun2024_run() {
  local family="$1" model="$2" gin_file="$3" name="$4"
  shift 4
  if [[ $# -lt 2 ]]; then
    echo "usage: $0 {observed|eval|report} {mmlu|bigbench_lite} [robust-prompt flags...]" >&2
    return 2
  fi
  local step="$1" benchmark="$2"
  shift 2
  local unobserved data_dir macro tasks=()
  case "${benchmark}" in
    mmlu)
      unobserved=tasks/instructions/mmlu.jsonl
      data_dir="${MMLU_DIR}"
      # The study pooled every MMLU question into one data set: its accuracy weighs subjects by size.
      macro=weighted
      ;;
    bigbench_lite)
      unobserved=tasks/instructions/bigbench
      data_dir="${BBL_DIR}"
      tasks=(--tasks "${SUN2024_BBL_TASKS[@]}")
      # The study reported BIG-bench tasks one by one: every task counts the same in the average.
      macro=unweighted
      ;;
    *)
      echo "BENCHMARK must be mmlu or bigbench_lite; got '${benchmark}'" >&2
      return 2
      ;;
  esac
  local observed="${OBSERVED_DIR}/${family}_${benchmark}.jsonl"
  local run_name="${RUN_NAME:-sun2024_${name}_${benchmark}}"
  local out="${OUT_ROOT}/${run_name}"
  case "${step}" in
    observed)
      local source_flag=()
      if [[ -n "${OBSERVED_SOURCE:-}" ]]; then
        source_flag=(--source "${OBSERVED_SOURCE}")
      elif [[ "${family}" == "alpaca" ]]; then
        echo "set OBSERVED_SOURCE to Alpaca's alpaca_data.json (tatsu-lab/stanford_alpaca)" >&2
        return 2
      fi
      run_short all instructions build --family "${family}" --benchmark "${benchmark}" \
        "${source_flag[@]}" --data_dir "${DATA_DIR}" --output "${observed}" "$@"
      ;;
    eval)
      launch_experiment "${run_name}" eval \
        --gin_file "${gin_file}" \
        --model "${model}" \
        --benchmark "${benchmark}" \
        --data_dir "${data_dir}" \
        "${tasks[@]}" \
        --instructions "${unobserved}" "${observed}" \
        --output_dir "${out}" \
        "$@"
      ;;
    report)
      run_short main report \
        --per_instruction "${out}/per_instruction.csv" \
        --results "${out}/results.jsonl" \
        --instructions "${unobserved}" "${observed}" \
        --macro "${macro}" \
        --title "Sun et al. 2023 reproduction: ${name} on ${benchmark}" \
        --output_dir "${out}/sun2024_report" \
        "$@"
      ;;
    *)
      echo "STEP must be observed, eval or report; got '${step}'" >&2
      return 2
      ;;
  esac
}
