/*
 * SecCollab plugin ABI, major version 1 — the C declaration of seccollab_plugin_api::abi.
 *
 * A plugin is a shared library exporting one function:
 *
 *     const SecCollabPluginDecl *seccollab_plugin_entry(void);
 *
 * that returns a pointer to a static declaration. Only byte slices, buffers the plugin
 * allocated (always handed back to its free_buf), int32 status codes, uint64 lengths and opaque
 * handles cross the line; structured values are JSON documents (see docs/plugins.md).
 * Instances are called from several threads at once: make them thread-safe.
 *
 * Compatibility within major 1: fields are only appended (each struct carries its size), codes
 * never change meaning, JSON documents only gain optional fields.
 */
#ifndef SECCOLLAB_PLUGIN_H
#define SECCOLLAB_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#define SECCOLLAB_ABI_MAJOR 1
#define SECCOLLAB_ABI_MINOR 1

/* Status codes. */
#define SECCOLLAB_OK 0
#define SECCOLLAB_TRANSIENT 1
#define SECCOLLAB_PERMANENT 2
#define SECCOLLAB_UNAVAILABLE 3
#define SECCOLLAB_NOT_FOUND 4
#define SECCOLLAB_INVALID 5
#define SECCOLLAB_PANIC 6
#define SECCOLLAB_UNSUPPORTED 7 /* an optional function the plugin does not offer (ABI 1.1) */

/* Kinds. */
#define SECCOLLAB_KIND_SCANNER 1
#define SECCOLLAB_KIND_STORAGE 2
#define SECCOLLAB_KIND_NOTIFIER 3
#define SECCOLLAB_KIND_OAUTH_PROVIDER 4

/* Borrowed bytes, valid during the call only. */
typedef struct {
    const uint8_t *ptr;
    size_t len;
} SecCollabSlice;

/* A buffer the plugin allocated; the host returns it to free_buf. ctx is the plugin's own. */
typedef struct {
    uint8_t *ptr;
    size_t len;
    size_t ctx;
} SecCollabBuf;

typedef struct {
    uint32_t abi_major;
    uint32_t abi_minor;
    size_t struct_size; /* sizeof(SecCollabPluginDecl) */
    uint32_t kind;
    SecCollabSlice name;    /* static UTF-8 */
    SecCollabSlice version; /* static UTF-8 */
    /* config is the plugin's table as JSON; on failure write a message into *err. */
    int32_t (*init)(SecCollabSlice config, void **instance, SecCollabBuf *err);
    void (*free_buf)(SecCollabBuf buf);
    const void *vtable; /* the kind's table below */
} SecCollabPluginDecl;

/* SECCOLLAB_KIND_SCANNER: on OK write the JSON report
 *   {"engine": "...", "matches": [{"rule", "namespace", "tags": [], "severity", "description"}]}
 * into *out; on failure a message. */
typedef struct {
    size_t struct_size;
    int32_t (*scan)(void *instance, SecCollabSlice data, SecCollabBuf *out);
    /* ABI 1.1, optional (all NULL, or scan_begin answering SECCOLLAB_UNSUPPORTED: whole files
     * only): a streamed scan of a file too large to hold in memory. scan_begin makes a handle,
     * scan_write feeds it the next piece, scan_finish writes the report (as scan does) and frees
     * the handle, scan_abort frees it without a verdict. */
    int32_t (*scan_begin)(void *instance, void **stream, SecCollabBuf *err);
    int32_t (*scan_write)(void *stream, SecCollabSlice data, SecCollabBuf *err);
    int32_t (*scan_finish)(void *stream, SecCollabBuf *out);
    void (*scan_abort)(void *stream);
} SecCollabScannerVTable;

/* SECCOLLAB_KIND_NOTIFIER: message is a JSON notification (docs/plugins.md). */
typedef struct {
    size_t struct_size;
    SecCollabSlice channel;
    int32_t (*deliver)(void *instance, SecCollabSlice message, SecCollabBuf *err);
} SecCollabNotifierVTable;

/* SECCOLLAB_KIND_OAUTH_PROVIDER. */
typedef struct {
    size_t struct_size;
    SecCollabSlice display_name;
    int32_t (*authorize)(void *instance, SecCollabSlice request, SecCollabBuf *out);
    int32_t (*exchange)(void *instance, SecCollabSlice request, SecCollabBuf *out);
} SecCollabOAuthVTable;

/* SECCOLLAB_KIND_STORAGE: streamed objects through writer and reader handles. */
typedef struct {
    size_t struct_size;
    int32_t (*put)(void *instance, SecCollabSlice key, void **writer, SecCollabBuf *err);
    int32_t (*write)(void *writer, SecCollabSlice data, SecCollabBuf *err);
    int32_t (*commit)(void *writer, uint64_t *len, SecCollabBuf *err); /* consumes writer */
    void (*abort)(void *writer);                                       /* consumes writer */
    int32_t (*open)(void *instance, SecCollabSlice key, uint64_t offset, void **reader, SecCollabBuf *err);
    int32_t (*read)(void *reader, uint8_t *buf, size_t cap, size_t *n, SecCollabBuf *err);
    void (*close)(void *reader);
    int32_t (*del)(void *instance, SecCollabSlice key, SecCollabBuf *err);
    int32_t (*stat)(void *instance, SecCollabSlice key, uint64_t *len, SecCollabBuf *err); /* NOT_FOUND when absent */
    int32_t (*list)(void *instance, SecCollabBuf *out); /* JSON array of keys */
} SecCollabStorageVTable;

#endif
