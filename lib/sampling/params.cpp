#include "sampling/params.hpp"

#include <cmath>
#include <string>

#include "io/number.hpp"
#include "tensor/error.hpp"
#include "tensor/quote.hpp"

namespace heads::sampling {

std::pair<std::int32_t, float> parse_logit_bias(std::string_view spec) {
    const auto bad = [&] {
        return UsageError(Param{"logit_bias"},
                          "bad logit bias {} (expected ID=BIAS, ID+BIAS or ID-BIAS; BIAS may be -inf)", quote(spec));
    };
    const auto op = spec.find_first_of("=+-");
    if (op == std::string_view::npos || op == 0) throw bad();
    const auto id = parse_count<std::int32_t>(spec.substr(0, op));
    if (!id) throw bad();
    std::string value(spec.substr(op + 1));
    if (spec[op] == '-') value = "-" + value;
    if (value == "-inf" || value == "-INF") return {*id, -INFINITY};
    std::size_t used = 0;
    float bias = 0;
    try {
        bias = std::stof(value, &used);
    } catch (const std::exception&) {
        throw bad();
    }
    if (used != value.size() || !std::isfinite(bias)) throw bad();
    return {*id, bias};
}

}  // namespace heads::sampling
