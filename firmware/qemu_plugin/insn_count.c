/*
 * kan2mcu instruction-counting TCG plugin for QEMU 7.2 (plugin API version 1).
 *
 * Counts executed translation blocks between two marker addresses (begin=, end=; the
 * firmware's kan2mcu_measure_begin/_end functions) and, for every block, how often the
 * next executed block did not start right after its last instruction (a taken branch).
 * At exit it writes, for every block executed in the window:
 *     T <vaddr> <n_insns> <exec_count> <taken_count>
 *     I <vaddr> <size> <disassembly>        (n_insns lines)
 * Python (kan2mcu.firmware.plugin) aggregates the blocks per address.
 *
 * Arguments: out=<file> (required), begin=<hex addr>, end=<hex addr> (without begin, the
 * whole run is counted). Debian ships no qemu-plugin.h, so the few API functions used are
 * declared here with their QEMU 7.2 signatures.
 * Build: gcc -O2 -shared -fPIC -o insn_count.so insn_count.c
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, qemu_plugin_vcpu_udata_cb_t cb,
                                          enum qemu_plugin_cb_flags flags, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);
char *qemu_plugin_insn_disas(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

typedef struct block {
    uint64_t vaddr;
    uint64_t next_vaddr; /* address right after the last instruction */
    size_t n_insns;
    uint64_t exec_count;
    uint64_t taken_count;
    uint64_t *insn_vaddr;
    size_t *insn_size;
    char **insn_disas;
    struct block *next_block;
} block;

static block *all_blocks;
static block *previous;
static bool counting;
static bool has_begin;
static uint64_t begin_addr, end_addr;
static char *out_path;

static void on_block_exec(unsigned int vcpu_index, void *userdata)
{
    block *b = (block *)userdata;
    (void)vcpu_index;
    if (has_begin && b->vaddr == begin_addr) {
        counting = true;
        previous = NULL;
        return;
    }
    if (!counting) {
        return;
    }
    if (previous != NULL && previous->next_vaddr != b->vaddr) {
        previous->taken_count++;
    }
    b->exec_count++;
    previous = b;
    if (has_begin && b->vaddr == end_addr) {
        counting = false;
        previous = NULL;
    }
}

static void on_block_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t i, n = qemu_plugin_tb_n_insns(tb);
    block *b = calloc(1, sizeof(*b));
    (void)id;
    if (b == NULL || n == 0) {
        free(b);
        return;
    }
    b->vaddr = qemu_plugin_tb_vaddr(tb);
    b->n_insns = n;
    b->insn_vaddr = calloc(n, sizeof(uint64_t));
    b->insn_size = calloc(n, sizeof(size_t));
    b->insn_disas = calloc(n, sizeof(char *));
    for (i = 0; i < n; ++i) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        char *text = qemu_plugin_insn_disas(insn);
        b->insn_vaddr[i] = qemu_plugin_insn_vaddr(insn);
        b->insn_size[i] = qemu_plugin_insn_size(insn);
        b->insn_disas[i] = strdup(text != NULL ? text : "?");
        free(text);
    }
    b->next_vaddr = b->insn_vaddr[n - 1] + b->insn_size[n - 1];
    b->next_block = all_blocks;
    all_blocks = b;
    qemu_plugin_register_vcpu_tb_exec_cb(tb, on_block_exec, QEMU_PLUGIN_CB_NO_REGS, b);
}

static void on_plugin_exit(qemu_plugin_id_t id, void *userdata)
{
    FILE *out = fopen(out_path, "w");
    block *b;
    size_t i;
    (void)id;
    (void)userdata;
    if (out == NULL) {
        fprintf(stderr, "insn_count: cannot write %s\n", out_path);
        return;
    }
    fprintf(out, "# kan2mcu insn_count 1\n");
    for (b = all_blocks; b != NULL; b = b->next_block) {
        if (b->exec_count == 0) {
            continue;
        }
        fprintf(out, "T %llx %zu %llu %llu\n", (unsigned long long)b->vaddr, b->n_insns,
                (unsigned long long)b->exec_count, (unsigned long long)b->taken_count);
        for (i = 0; i < b->n_insns; ++i) {
            char *c;
            for (c = b->insn_disas[i]; *c != '\0'; ++c) {
                if (*c == '\n' || *c == '\t') {
                    *c = ' ';
                }
            }
            fprintf(out, "I %llx %zu %s\n", (unsigned long long)b->insn_vaddr[i], b->insn_size[i],
                    b->insn_disas[i]);
        }
    }
    fprintf(out, "# end\n");
    fclose(out);
}

__attribute__((visibility("default")))
int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    int i;
    (void)info;
    for (i = 0; i < argc; ++i) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            out_path = strdup(argv[i] + 4);
        } else if (strncmp(argv[i], "begin=", 6) == 0) {
            begin_addr = strtoull(argv[i] + 6, NULL, 0);
            has_begin = true;
        } else if (strncmp(argv[i], "end=", 4) == 0) {
            end_addr = strtoull(argv[i] + 4, NULL, 0);
        } else {
            fprintf(stderr, "insn_count: unknown argument %s\n", argv[i]);
            return -1;
        }
    }
    if (out_path == NULL) {
        fprintf(stderr, "insn_count: out=<file> is required\n");
        return -1;
    }
    counting = !has_begin;
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_block_translate);
    qemu_plugin_register_atexit_cb(id, on_plugin_exit, NULL);
    return 0;
}
