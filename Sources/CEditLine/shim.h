// libedit (BSD editline) for cairn shell: its native API, with the variadic el_set and history calls
// the shell uses wrapped in fixed-argument functions Swift can call.
#include <histedit.h>
#include <langinfo.h>
#include <locale.h>
#include <stdio.h>

static inline int cairn_el_prompt(EditLine *el, char *(*fn)(EditLine *)) { return el_set(el, EL_PROMPT, fn); }
static inline int cairn_el_editor(EditLine *el, const char *mode) { return el_set(el, EL_EDITOR, mode); }
static inline int cairn_el_bind(EditLine *el, const char *key, const char *fn) { return el_set(el, EL_BIND, key, fn, NULL); }
static inline int cairn_el_addfn(EditLine *el, const char *name, const char *help, unsigned char (*fn)(EditLine *, int)) {
    return el_set(el, EL_ADDFN, name, help, fn);
}
static inline int cairn_el_history(EditLine *el, History *h) { return el_set(el, EL_HIST, history, h); }
// Ctrl-C reaches the editor as a key (bound to drop the line) rather than as SIGINT.
static inline int cairn_el_no_isig(EditLine *el) { return el_set(el, EL_SETTY, "-d", "-isig", NULL); }
static inline int cairn_history_size(History *h, HistEvent *ev, int n) { return history(h, ev, H_SETSIZE, n); }
static inline int cairn_history_unique(History *h, HistEvent *ev) { return history(h, ev, H_SETUNIQUE, 1); }
static inline int cairn_history_enter(History *h, HistEvent *ev, const char *line) { return history(h, ev, H_ENTER, line); }
