/* The usual log() call's spool frame, made in one C call (see shaped.py, which builds the same
 * bytes in Python where this module is not compiled).
 *
 * A training loop logs the same float-valued names at every step. Between two calls, the
 * training step evicts the interpreter's working set from the caches, so the Python encoder's
 * dozens of bytecodes run cold: measured in a loop of ~100 us steps, it cost several times its
 * tight-loop time. Here one call fetches the values, checks their types, and fills a copy of a
 * template whose constant bytes (msgpack's map and string headers) were laid out once in Python.
 *
 * Encoder(names, template, value_offsets, time_offset, step_offset, mark)
 *     template: the frame with every number zeroed: header (mark, payload length, checksum 0),
 *     then the msgpack record [{name: float64, ...}, 0, float64 time, uint64 step].
 * encoder(metrics, step) -> bytes | None
 *     None unless ``metrics`` is a dict of exactly those names, each value a float, and
 *     0 <= step < 2**64: the caller then takes its general path.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include <time.h>

#define HEADER_SIZE 12  /* struct "<4sII": mark, payload length, adler32 of the payload */

typedef struct {
    PyObject_HEAD
    PyObject *names;          /* tuple of str */
    Py_ssize_t count;
    char *template;
    Py_ssize_t size;          /* whole frame, header included */
    Py_ssize_t *value_offsets;
    Py_ssize_t time_offset;
    Py_ssize_t step_offset;
} Encoder;

static void put_be64(char *out, uint64_t bits) {
    for (int i = 7; i >= 0; i--) {
        out[i] = (char)(bits & 0xFF);
        bits >>= 8;
    }
}

static void put_le32(char *out, uint32_t value) {
    for (int i = 0; i < 4; i++) {
        out[i] = (char)(value & 0xFF);
        value >>= 8;
    }
}

static void put_double(char *out, double value) {
    uint64_t bits;
    memcpy(&bits, &value, sizeof bits);
    put_be64(out, bits);
}

/* zlib's adler32 (RFC 1950), as zlib.adler32(data) computes it: the frame's checksum. */
static uint32_t adler32(const unsigned char *data, Py_ssize_t length) {
    uint32_t a = 1, b = 0;
    while (length > 0) {
        Py_ssize_t chunk = length < 5552 ? length : 5552;  /* no overflow before the modulo */
        length -= chunk;
        while (chunk--) {
            a += *data++;
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    return (b << 16) | a;
}

static void Encoder_dealloc(Encoder *self) {
    Py_XDECREF(self->names);
    PyMem_Free(self->template);
    PyMem_Free(self->value_offsets);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Encoder_init(Encoder *self, PyObject *args, PyObject *kwds) {
    static char *keywords[] = {"names", "template", "value_offsets", "time_offset", "step_offset", NULL};
    PyObject *names, *offsets;
    Py_buffer template;
    Py_ssize_t time_offset, step_offset;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!y*O!nn", keywords, &PyTuple_Type, &names, &template,
                                     &PyTuple_Type, &offsets, &time_offset, &step_offset))
        return -1;
    Py_ssize_t count = PyTuple_GET_SIZE(names);
    int ok = count > 0 && PyTuple_GET_SIZE(offsets) == count && template.len > HEADER_SIZE
             && time_offset >= HEADER_SIZE && time_offset + 8 <= template.len
             && step_offset >= HEADER_SIZE && step_offset + 8 <= template.len;
    for (Py_ssize_t i = 0; ok && i < count; i++)
        ok = PyUnicode_CheckExact(PyTuple_GET_ITEM(names, i));
    if (!ok) {
        PyBuffer_Release(&template);
        PyErr_SetString(PyExc_ValueError, "Encoder: inconsistent names, template or offsets");
        return -1;
    }
    Py_ssize_t *value_offsets = PyMem_Calloc((size_t)count, sizeof(Py_ssize_t));
    char *copy = PyMem_Malloc((size_t)template.len);
    if (value_offsets == NULL || copy == NULL) {
        PyMem_Free(value_offsets);
        PyMem_Free(copy);
        PyBuffer_Release(&template);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        value_offsets[i] = PyLong_AsSsize_t(PyTuple_GET_ITEM(offsets, i));
        if (value_offsets[i] < HEADER_SIZE || value_offsets[i] + 8 > template.len) {
            PyMem_Free(value_offsets);
            PyMem_Free(copy);
            PyBuffer_Release(&template);
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "Encoder: a value offset outside the template");
            return -1;
        }
    }
    memcpy(copy, template.buf, (size_t)template.len);
    Py_INCREF(names);
    Py_XSETREF(self->names, names);
    PyMem_Free(self->template);
    PyMem_Free(self->value_offsets);
    self->template = copy;
    self->size = template.len;
    self->value_offsets = value_offsets;
    self->count = count;
    self->time_offset = time_offset;
    self->step_offset = step_offset;
    PyBuffer_Release(&template);
    return 0;
}

static PyObject *Encoder_call(Encoder *self, PyObject *args, PyObject *kwds) {
    PyObject *metrics, *step_object;
    if (self->template == NULL) {
        PyErr_SetString(PyExc_ValueError, "Encoder: not initialised");
        return NULL;
    }
    if (kwds != NULL && PyDict_GET_SIZE(kwds) != 0) {
        PyErr_SetString(PyExc_TypeError, "Encoder takes (metrics, step) only");
        return NULL;
    }
    if (!PyArg_UnpackTuple(args, "Encoder", 2, 2, &metrics, &step_object))
        return NULL;
    if (!PyDict_CheckExact(metrics) || PyDict_GET_SIZE(metrics) != self->count || !PyLong_Check(step_object))
        Py_RETURN_NONE;
    unsigned long long step = PyLong_AsUnsignedLongLong(step_object);
    if (step == (unsigned long long)-1 && PyErr_Occurred()) {  /* negative or 2**64 and beyond */
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    PyObject *frame = PyBytes_FromStringAndSize(NULL, self->size);
    if (frame == NULL)
        return NULL;
    char *out = PyBytes_AS_STRING(frame);
    memcpy(out, self->template, (size_t)self->size);
    for (Py_ssize_t i = 0; i < self->count; i++) {
        PyObject *value = PyDict_GetItemWithError(metrics, PyTuple_GET_ITEM(self->names, i));
        if (value == NULL || !PyFloat_CheckExact(value)) {
            Py_DECREF(frame);
            if (PyErr_Occurred())  /* a key's __eq__ raised: as the Python encoder, let it */
                return NULL;
            Py_RETURN_NONE;
        }
        put_double(out + self->value_offsets[i], PyFloat_AS_DOUBLE(value));
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);  /* time.time(): the same clock, the same rounding */
    long long nanoseconds = (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
    put_double(out + self->time_offset, (double)nanoseconds / 1e9);
    put_be64(out + self->step_offset, (uint64_t)step);
    put_le32(out + 8, adler32((const unsigned char *)out + HEADER_SIZE, self->size - HEADER_SIZE));
    return frame;
}

static PyObject *Encoder_get_names(Encoder *self, void *closure) {
    (void)closure;
    if (self->names == NULL)
        Py_RETURN_NONE;
    return Py_NewRef(self->names);
}

static PyGetSetDef Encoder_getset[] = {
    {"names", (getter)Encoder_get_names, NULL, "The names this encoder packs, in order.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject EncoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "runyard.sdk._frames.Encoder",
    .tp_doc = PyDoc_STR("encoder(metrics, step) -> the spool frame of a metrics record, or None"),
    .tp_basicsize = sizeof(Encoder),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Encoder_init,
    .tp_dealloc = (destructor)Encoder_dealloc,
    .tp_call = (ternaryfunc)Encoder_call,
    .tp_getset = Encoder_getset,
};

static struct PyModuleDef frames_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "runyard.sdk._frames",
    .m_doc = PyDoc_STR("The usual log() call's spool frame in one C call (see shaped.py)."),
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__frames(void) {
    if (PyType_Ready(&EncoderType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&frames_module);
    if (module == NULL)
        return NULL;
    if (PyModule_AddObjectRef(module, "Encoder", (PyObject *)&EncoderType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
