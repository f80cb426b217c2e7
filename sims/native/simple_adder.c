/* Simple Adder as a process simulator (aml-rl-sim protocol 1), in C with no library.
 *
 * Build: cc -O2 -o simple_adder simple_adder.c
 * It reads requests from fd 3 and answers on fd 4, one JSON line each; what it prints to
 * stdout or stderr is logged, never read as protocol. The environment writes compact JSON
 * (no spaces) in the shapes below, so a few string searches parse it; a simulator in a
 * language with a JSON library should use that instead.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#define GOAL 50.0
#define MAX_ADDEND 10.0
#define MAX_STEPS 10

/* The number after "key": in line, or fallback when the key is absent. */
static double number_after(const char *line, const char *key, double fallback) {
    const char *at = strstr(line, key);
    return at ? strtod(at + strlen(key), NULL) : fallback;
}

static void answer(FILE *out, double value, int steps) {
    int terminated = value == GOAL;
    int truncated = !terminated && steps >= MAX_STEPS;
    fprintf(out, "{\"states\":{\"value\":%.17g},\"terminated\":%s,\"truncated\":%s}\n",
            value, terminated ? "true" : "false", truncated ? "true" : "false");
    fflush(out);
}

int main(void) {
    FILE *in = fdopen(3, "r");
    FILE *out = fdopen(4, "w");
    if (!in || !out) {
        fprintf(stderr, "simple_adder: fds 3 and 4 are not open; run me from aml-rl\n");
        return 2;
    }
    char line[65536];
    double value = 0.0;
    int steps = 0;
    fprintf(out, "{\"protocol\":1,\"name\":\"simple_adder_c\"}\n");
    fflush(out);
    printf("simple_adder: started\n"); /* stdout is a log: this cannot break the protocol */
    while (fgets(line, sizeof line, in)) {
        if (strstr(line, "\"op\":\"reset\"")) {
            value = round(number_after(line, "\"initial_value\":", 25.0));
            steps = 0;
            answer(out, value, steps);
        } else if (strstr(line, "\"op\":\"step\"")) {
            double addend = round(number_after(line, "\"addend\":", 0.0));
            if (addend > MAX_ADDEND) addend = MAX_ADDEND;
            if (addend < -MAX_ADDEND) addend = -MAX_ADDEND;
            value += addend;
            steps += 1;
            answer(out, value, steps);
        } else if (strstr(line, "\"op\":\"close\"")) {
            break;
        } else {
            fprintf(out, "{\"error\":\"unknown request\"}\n");
            fflush(out);
        }
    }
    return 0;
}
