/*
 * A scanner plugin written in C, compiled by the black-box tests with `cc -shared`: it proves
 * the plugin ABI is language-neutral. It flags any file containing its configured marker
 * (default "C-PLUGIN-MARKER"). Built with -DABI_MAJOR_OVERRIDE=2 it declares another ABI major
 * (the host must refuse it); with -DGARBAGE its scan answers an unknown status and text that is
 * not JSON (the host must survive and report it); with -DNO_ENTRY it exports no entry point;
 * -DPLUGIN_NAME='"x"' changes the name it declares.
 */
#include <stdlib.h>
#include <string.h>

#include "seccollab_plugin.h"

#ifndef PLUGIN_NAME
#define PLUGIN_NAME "cscan"
#endif

#ifndef ABI_MAJOR_OVERRIDE
#define ABI_MAJOR_OVERRIDE SECCOLLAB_ABI_MAJOR
#endif

typedef struct {
    char marker[128];
} Instance;

static void put_text(SecCollabBuf *out, const char *s) {
    size_t n = strlen(s);
    out->ptr = malloc(n);
    memcpy(out->ptr, s, n);
    out->len = n;
    out->ctx = 0;
}

static void free_buf(SecCollabBuf b) { free(b.ptr); }

static int32_t init(SecCollabSlice config, void **instance, SecCollabBuf *err) {
    Instance *i = calloc(1, sizeof *i);
    strcpy(i->marker, "C-PLUGIN-MARKER");
    /* A deliberately tiny JSON reader: {"marker": "..."} only. */
    const char *key = "\"marker\"";
    const char *p = memmem(config.ptr, config.len, key, strlen(key));
    if (p) {
        const char *q = memchr(p + strlen(key), '"', config.len - (size_t)(p - (const char *)config.ptr) - strlen(key));
        const char *end = q ? memchr(q + 1, '"', config.len - (size_t)(q + 1 - (const char *)config.ptr)) : NULL;
        if (!q || !end || (size_t)(end - q - 1) >= sizeof i->marker || end == q + 1) {
            free(i);
            put_text(err, "marker must be a non-empty string under 128 bytes");
            return SECCOLLAB_INVALID;
        }
        memcpy(i->marker, q + 1, (size_t)(end - q - 1));
        i->marker[end - q - 1] = 0;
    }
    *instance = i;
    return SECCOLLAB_OK;
}

static int32_t scan(void *instance, SecCollabSlice data, SecCollabBuf *out) {
#ifdef GARBAGE
    (void)instance;
    (void)data;
    put_text(out, "\xff\xfe not json at all");
    return 77;
#else
    Instance *i = instance;
    int found = data.len > 0 && memmem(data.ptr, data.len, i->marker, strlen(i->marker)) != NULL;
    if (found) {
        put_text(out, "{\"engine\":\"c-scanner 1.0\",\"matches\":[{\"rule\":\"c_marker\",\"namespace\":\"c\","
                      "\"tags\":[],\"severity\":\"high\",\"description\":\"contains the C plugin's marker\"}]}");
    } else {
        put_text(out, "{\"engine\":\"c-scanner 1.0\",\"matches\":[]}");
    }
    return SECCOLLAB_OK;
#endif
}

static const SecCollabScannerVTable vtable = {sizeof(SecCollabScannerVTable), scan};

static const SecCollabPluginDecl decl = {
    ABI_MAJOR_OVERRIDE,
    SECCOLLAB_ABI_MINOR,
    sizeof(SecCollabPluginDecl),
    SECCOLLAB_KIND_SCANNER,
    {(const uint8_t *)PLUGIN_NAME, sizeof(PLUGIN_NAME) - 1},
    {(const uint8_t *)"1.0.0", 5},
    init,
    free_buf,
    &vtable,
};

#ifndef NO_ENTRY
const SecCollabPluginDecl *seccollab_plugin_entry(void) { return &decl; }
#else
const SecCollabPluginDecl *some_other_function(void) { return &decl; }
#endif
